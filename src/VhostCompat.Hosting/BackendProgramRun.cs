using System.Globalization;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using VhostCompat.Backend;
using VhostCompat.Compat;

namespace VhostCompat.Hosting;

/// <summary>One run of a backend program after its arguments were accepted: print the capabilities, or serve every port until stopped.</summary>
internal sealed class BackendProgramRun : IDisposable
{
    private readonly BackendProgramBuilder _builder;
    private readonly BackendProgramContext _context;
    private readonly TextWriter _output;
    private readonly TextWriter _error;
    private readonly List<VhostUserDevice> _devices = [];
    private readonly List<PosixSignalRegistration> _signals = [];
    private ILoggerFactory? _loggerFactory;

    public BackendProgramRun(BackendProgramBuilder builder, BackendProgramContext context, TextWriter output, TextWriter error)
    {
        _builder = builder;
        _context = context;
        _output = output;
        _error = error;
    }

    public async Task<int> PrintCapabilitiesAsync()
    {
        VhostUserDevice device;
        string document;
        try
        {
            device = NewDevice(0);
            document = CapabilityDocument.Render(device, new VhostUserBackendOptions { SocketPath = "-" }, device.Catalog);
        }
        catch (Exception ex) when (ex is ArgumentException or FormatException or IOException or UnauthorizedAccessException)
        {
            return await FailAsync(ex is ArgumentException or FormatException ? VhostUserBackendProgram.ExitUsage : VhostUserBackendProgram.ExitFailure, ex.Message).ConfigureAwait(false);
        }

        await _output.WriteLineAsync(document).ConfigureAwait(false);
        await _output.FlushAsync().ConfigureAwait(false);
        return VhostUserBackendProgram.ExitOk;
    }

    public async Task<int> ServeAsync(LogLevel level, bool client, string? profile, string? stateDir, bool handleSignals, UnixFileMode? socketMode = null, string? socketGroup = null)
    {
        _loggerFactory = _builder.LoggerFactoryFactory?.Invoke(level);
        _context.LoggerFactory = _loggerFactory ?? NullLoggerFactory.Instance;
        ILogger logger = _context.LoggerFactory.CreateLogger("VhostCompat.Hosting");
        if (handleSignals)
        {
            RegisterSignals(logger);
        }

        var backends = new List<(string Name, string Endpoint, VhostUserSocketMode Mode, VhostUserBackend Backend)>();
        int port = 0;
        try
        {
            foreach (var starting in _builder.Starting)
            {
                starting(_context);
            }

            for (port = 0; port < _context.PortCount; port++)
            {
                var options = new VhostUserBackendOptions
                {
                    SocketPath = _context.InheritedFd is null ? _context.SocketPaths[port] : null,
                    InheritedFd = _context.InheritedFd,
                    Mode = client ? VhostUserSocketMode.Client : VhostUserSocketMode.Server,
                    CompatProfile = profile,
                    StateDirectory = stateDir,
                    SocketMode = socketMode,
                    SocketGroup = socketGroup,
                };
                foreach (var configure in _builder.BackendConfigurations)
                {
                    configure(_context, port, options);
                }

                var backend = new VhostUserBackend(NewDevice(port), options, _context.LoggerFactory);
                backend.LoadRecord(); // a pin or record this build cannot honour fails here, before anything listens
                string name = _context.PortCount == 1 ? "(default)" : string.Create(CultureInfo.InvariantCulture, $"port {port}");
                backends.Add((name, options.SocketPath ?? string.Create(CultureInfo.InvariantCulture, $"fd {options.InheritedFd}"), options.Mode, backend));
            }
        }
        catch (Exception ex) when (ex is FormatException or CompatibilityException or AckedStateCorruptException)
        {
            // A pin this build cannot offer, or a saved record it can no longer honour: refuse rather than let the
            // frontend reconnect in a loop (QEMU's convention: a requested feature that is unavailable is an error).
            return await FailAsync(VhostUserBackendProgram.ExitIncompatible, PortPrefix(port) + ex.Message).ConfigureAwait(false);
        }
        catch (ArgumentException ex)
        {
            return await FailAsync(VhostUserBackendProgram.ExitUsage, PortPrefix(port) + ex.Message).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return await FailAsync(VhostUserBackendProgram.ExitFailure, ex.Message).ConfigureAwait(false);
        }

        Exception? failure = await RunAllAsync(backends, logger).ConfigureAwait(false);
        if (failure is not null)
        {
            return await FailAsync(VhostUserBackendProgram.ExitFailure, failure.Message).ConfigureAwait(false);
        }

        foreach (var stopped in _builder.Stopped)
        {
            stopped(_context);
        }

        return VhostUserBackendProgram.ExitOk;
    }

    /// <summary>Runs every backend; the first failure stops the others. Returns that failure, or null after a clean stop.</summary>
    private async Task<Exception?> RunAllAsync(List<(string Name, string Endpoint, VhostUserSocketMode Mode, VhostUserBackend Backend)> backends, ILogger logger)
    {
        var running = new Dictionary<Task, string>();
        foreach (var (name, endpoint, mode, backend) in backends)
        {
            Task run = backend.RunAsync(_context.Stopping);
            running[run] = name;
            if (!run.IsCompleted)
            {
                Log.Started(logger, name, endpoint, mode.ToString());
            }
        }

        Exception? failure = null;
        while (running.Count > 0)
        {
            Task done = await Task.WhenAny(running.Keys).ConfigureAwait(false);
            string name = running[done];
            running.Remove(done);
            if (done.IsFaulted && !(done.Exception!.InnerException is OperationCanceledException && _context.Stopping.IsCancellationRequested))
            {
                Exception ex = done.Exception.InnerException!;
                Log.Failed(logger, ex, name, ex.Message);
                failure ??= ex is SocketException s ? new IOException($"{name}: {s.Message}", s) : ex;
                _context.Stop();
            }
            else if (_context.Stopping.IsCancellationRequested)
            {
                Log.Stopped(logger, name);
            }
            else
            {
                Log.Ended(logger, name);
            }
        }

        _context.Stop();
        return failure;
    }

    private VhostUserDevice NewDevice(int port)
    {
        VhostUserDevice device = _builder.DeviceFactory!(_context, port);
        _devices.Add(device);
        return device;
    }

    private void RegisterSignals(ILogger logger)
    {
        foreach (PosixSignal stop in new[] { PosixSignal.SIGTERM, PosixSignal.SIGINT })
        {
            _signals.Add(PosixSignalRegistration.Create(stop, c =>
            {
                c.Cancel = true;
                if (!_context.Stopping.IsCancellationRequested)
                {
                    Log.StopSignal(logger, c.Signal.ToString());
                    _context.Stop();
                }
            }));
        }

        foreach (var (signal, handler) in _builder.Signals)
        {
            _signals.Add(PosixSignalRegistration.Create(signal, c =>
            {
                c.Cancel = true;
                handler(_context);
            }));
        }
    }

    private string PortPrefix(int port) =>
        _context.PortCount > 1 ? string.Create(CultureInfo.InvariantCulture, $"port {port}: ") : string.Empty;

    private async Task<int> FailAsync(int exitCode, string message)
    {
        await _error.WriteLineAsync(VhostUserBackendProgram.OneLine(message)).ConfigureAwait(false);
        await _error.FlushAsync().ConfigureAwait(false);
        return exitCode;
    }

    public void Dispose()
    {
        foreach (var registration in _signals)
        {
            registration.Dispose();
        }

        _context.DisposeRegistered();
        foreach (var device in _devices)
        {
            (device as IDisposable)?.Dispose();
        }

        _loggerFactory?.Dispose();
    }
}
