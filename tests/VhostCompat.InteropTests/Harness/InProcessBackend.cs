using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Logging;

namespace VhostCompat.InteropTests.Harness;

/// <summary>
/// A <see cref="VhostUserBackend"/> serving a test device inside the test process (server mode on a socket in the run
/// directory), its log written line by line to a file in the run directory: "level: category: message", timestamped
/// with <see cref="Stopwatch"/> milliseconds since the backend started, so that log lines and test events line up.
/// </summary>
internal sealed class InProcessBackend : IAsyncDisposable
{
    private readonly CancellationTokenSource _stop = new();
    private readonly FileLoggerFactory _logs;
    private readonly Task _run;

    private InProcessBackend(VhostUserBackend backend, FileLoggerFactory logs, string socketPath)
    {
        Backend = backend;
        _logs = logs;
        SocketPath = socketPath;
        _run = Task.Run(() => backend.RunAsync(_stop.Token));
    }

    public VhostUserBackend Backend { get; }

    public string SocketPath { get; }

    public string LogPath => _logs.Path;

    /// <summary>Starts serving <paramref name="device"/> on <paramref name="socketPath"/> and waits until the socket exists.</summary>
    public static async Task<InProcessBackend> StartAsync(InteropRun run, VhostUserDevice device, string socketPath, string name = "backend")
    {
        ArgumentNullException.ThrowIfNull(run);
        File.Delete(socketPath);
        var logs = new FileLoggerFactory(run.PathFor(name + ".log"));
        run.AddArtifact($"in-process backend log ({name})", logs.Path);
        var backend = new InProcessBackend(new VhostUserBackend(device, new VhostUserBackendOptions { SocketPath = socketPath }, logs), logs, socketPath);
        var clock = Stopwatch.StartNew();
        while (!File.Exists(socketPath))
        {
            if (backend._run.IsCompleted)
            {
                await backend._run.ConfigureAwait(false); // throws what stopped it
                throw new InvalidOperationException("the backend stopped before it listened");
            }

            if (clock.Elapsed > TimeSpan.FromSeconds(30))
            {
                throw new TimeoutException($"the backend did not create {socketPath} within 30 s");
            }

            await Task.Delay(20).ConfigureAwait(false);
        }

        return backend;
    }

    /// <summary>Log lines so far.</summary>
    public IReadOnlyList<string> LogLines() => LogFile.ReadLines(LogPath);

    /// <summary>Error and critical entries.</summary>
    public IReadOnlyList<string> ErrorLines() =>
        LogLines().Where(l => l.Contains(" fail: ", StringComparison.Ordinal) || l.Contains(" crit: ", StringComparison.Ordinal)).ToList();

    /// <summary>The vhost-user requests the backend received, in order (from its Debug "request NAME" lines).</summary>
    public IReadOnlyList<string> Requests() =>
        LogLines().Select(l => l.IndexOf(": request ", StringComparison.Ordinal) is var i and >= 0 ? l[(i + ": request ".Length)..].Split(' ')[0] : null)
            .OfType<string>().ToList();

    /// <summary>Stops serving (cancels RunAsync) and waits for it, at most 15 s.</summary>
    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        try
        {
            await _run.WaitAsync(TimeSpan.FromSeconds(15)).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // the normal end of RunAsync
        }

        _stop.Dispose();
        _logs.Dispose();
    }

    /// <summary>Every logger writes to one file (Debug and up); thread-safe.</summary>
    private sealed class FileLoggerFactory(string path) : ILoggerFactory
    {
        private readonly Lock _lock = new();
        private readonly StreamWriter _writer = new(new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.ReadWrite)) { AutoFlush = true };
        private readonly Stopwatch _clock = Stopwatch.StartNew();

        public string Path { get; } = path;

        public ILogger CreateLogger(string categoryName) => new FileLogger(this, categoryName);

        public void AddProvider(ILoggerProvider provider) => throw new NotSupportedException();

        public void Dispose()
        {
            lock (_lock)
            {
                _writer.Dispose();
            }
        }

        private void Write(LogLevel level, string category, string message, Exception? exception)
        {
            var tag = level switch
            {
                LogLevel.Trace => "trce", LogLevel.Debug => "dbug", LogLevel.Information => "info",
                LogLevel.Warning => "warn", LogLevel.Error => "fail", _ => "crit",
            };
            var line = string.Create(CultureInfo.InvariantCulture, $"{_clock.Elapsed.TotalMilliseconds,9:F1} {tag}: {category}: {message}{(exception is null ? "" : " | " + exception)}");
            lock (_lock)
            {
                try
                {
                    _writer.WriteLine(line);
                }
                catch (ObjectDisposedException)
                {
                    // a late log line after the test finished
                }
            }
        }

        private sealed class FileLogger(FileLoggerFactory owner, string category) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state)
                where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Debug;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            {
                if (IsEnabled(logLevel))
                {
                    owner.Write(logLevel, category, formatter(state, exception), exception);
                }
            }
        }
    }
}
