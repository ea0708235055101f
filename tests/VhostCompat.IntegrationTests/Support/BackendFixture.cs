using Microsoft.Extensions.Logging;
using VhostCompat.Backend;

namespace VhostCompat.IntegrationTests.Support;

/// <summary>Runs a <see cref="VhostUserBackend"/> in-process on a fresh socket path for one test.</summary>
internal sealed class BackendFixture : IAsyncDisposable
{
    private readonly CancellationTokenSource _stop = new();
    private readonly ILoggerFactory _loggerFactory;
    private readonly TaskCompletionSource _listening = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _sessionsEnded;

    public BackendFixture(TestDevice? device = null, Action<VhostUserBackendOptions>? configure = null)
        : this((VhostUserDevice?)device ?? new TestDevice(), configure)
    {
    }

    /// <summary>A fixture for any device (<see cref="Device"/> is then only valid for a <see cref="TestDevice"/>).</summary>
    public BackendFixture(VhostUserDevice device, Action<VhostUserBackendOptions>? configure = null)
    {
        Directory = System.IO.Directory.CreateTempSubdirectory("vhostcompat-it-").FullName;
        SocketPath = Path.Combine(Directory, "backend.sock");
        AnyDevice = device;
        Options = new VhostUserBackendOptions { SocketPath = SocketPath, MessageTimeout = TimeSpan.FromMilliseconds(500) };
        configure?.Invoke(Options);
        _loggerFactory = LoggerFactory.Create(b => b.SetMinimumLevel(LogLevel.Trace).AddProvider(Logs));
        Backend = new VhostUserBackend(device, Options, _loggerFactory);
        Backend.SessionEnded += reason =>
        {
            LastSessionEndReason = reason;
            Interlocked.Increment(ref _sessionsEnded);
        };
        Run = Task.Run(() => Backend.RunAsync(_stop.Token));
    }

    public string Directory { get; }

    public string SocketPath { get; }

    public TestDevice Device => (TestDevice)AnyDevice;

    public VhostUserDevice AnyDevice { get; }

    public VhostUserBackendOptions Options { get; }

    public VhostUserBackend Backend { get; }

    public ListLoggerProvider Logs { get; } = new();

    public Task Run { get; }

    public int SessionsEnded => Volatile.Read(ref _sessionsEnded);

    public string? LastSessionEndReason { get; private set; }

    public async Task WaitListeningAsync()
    {
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (!Logs.Lines.Any(l => l.Contains("Listening for a vhost-user frontend", StringComparison.Ordinal)))
        {
            if (Run.IsCompleted)
            {
                await Run;
            }

            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException("backend did not start listening");
            }

            await Task.Delay(10);
        }
    }

    public async Task WaitSessionsEndedAsync(int count, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(5));
        while (SessionsEnded < count)
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"only {SessionsEnded} of {count} sessions ended; log:\n{Logs.Text}");
            }

            await Task.Delay(10);
        }
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        try
        {
            await Run.WaitAsync(TimeSpan.FromSeconds(10));
        }
        catch (OperationCanceledException)
        {
        }

        _loggerFactory.Dispose();
        _stop.Dispose();
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
