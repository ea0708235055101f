using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using VhostCompat.Backend;

namespace VhostCompat.Hosting;

/// <summary>
/// Runs one <see cref="VhostUserBackend"/> from host start to host stop. Start builds the backend (profile and
/// acked-state record checked) and begins listening or connecting, so a setup error fails the host's start;
/// stop cancels the backend and waits for it, bounded by the host's shutdown token and <see cref="StopTimeout"/>.
/// </summary>
internal sealed class VhostUserBackendService : IHostedService, IDisposable
{
    /// <summary>Upper bound of the wait in <see cref="StopAsync"/> even when the host's token never fires.</summary>
    internal static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(30);

    private readonly string _name;
    private readonly VhostUserDevice _device;
    private readonly VhostUserBackendOptions _options;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _logger;
    private readonly IHostApplicationLifetime? _lifetime;
    private readonly CancellationTokenSource _stopping = new();
    private Task? _run;

    public VhostUserBackendService(string name, VhostUserDevice device, VhostUserBackendOptions options, ILoggerFactory loggerFactory, IHostApplicationLifetime? lifetime)
    {
        _lifetime = lifetime;
        _name = name.Length == 0 ? "(default)" : name;
        _device = device;
        _options = options;
        _loggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger("VhostCompat.Hosting");
    }

    /// <summary>The backend, once started.</summary>
    internal VhostUserBackend? Backend { get; private set; }

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        // Throws for a bad profile pin or state key, and for an acked-state record this build cannot honour.
        var backend = new VhostUserBackend(_device, _options, _loggerFactory);
        backend.LoadRecord();
        Backend = backend;

        // RunAsync sets up synchronously (worker pool, listening socket) before its first wait, so a socket
        // path served by another live backend faults the task right here and fails the start.
        Task run = backend.RunAsync(_stopping.Token);
        if (run.IsFaulted)
        {
            await run.ConfigureAwait(false);
        }

        _run = WatchAsync(run);
        Log.Started(_logger, _name, _options.SocketPath ?? $"fd {_options.InheritedFd}", _options.Mode.ToString());
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_run is null)
        {
            return;
        }

        await _stopping.CancelAsync().ConfigureAwait(false);
        try
        {
            await _run.WaitAsync(StopTimeout, cancellationToken).ConfigureAwait(false);
            Log.Stopped(_logger, _name);
        }
        catch (TimeoutException)
        {
            Log.StopTimedOut(_logger, _name, (long)StopTimeout.TotalMilliseconds);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            Log.StopAbandoned(_logger, _name);
        }
    }

    public void Dispose() => _stopping.Dispose();

    /// <summary>
    /// Awaits the backend. When it ends by itself (a failure, or an inherited connected fd / client mode without
    /// reconnect whose frontend went away) the host is stopped: there is nothing left to serve.
    /// </summary>
    private async Task WatchAsync(Task run)
    {
        try
        {
            await run.ConfigureAwait(false);
            if (!_stopping.IsCancellationRequested)
            {
                Log.Ended(_logger, _name);
                _lifetime?.StopApplication();
            }
        }
        catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
        {
        }
        catch (Exception ex)
        {
            Log.Failed(_logger, ex, _name, ex.Message);
            _lifetime?.StopApplication();
        }
    }
}
