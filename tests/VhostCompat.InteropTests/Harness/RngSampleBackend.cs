namespace VhostCompat.InteropTests.Harness;

/// <summary>
/// The sample vhost-user-rng backend (samples/Rng, on the generic host) run as
/// <c>dotnet VhostCompat.Samples.Rng.dll --socket-path SOCK --log-level Debug</c>: it listens, QEMU connects.
/// Its Microsoft.Extensions.Logging simple-console output (stdout) is the log that is checked.
/// </summary>
public sealed class RngSampleBackend : IAsyncDisposable
{
    private RngSampleBackend(ExternalProcess process, string socketPath)
    {
        Process = process;
        SocketPath = socketPath;
    }

    public ExternalProcess Process { get; }

    public string SocketPath { get; }

    public string LogPath => Process.StdoutPath;

    public static string DllPath => RepositoryLayout.SampleDll("Rng", "VhostCompat.Samples.Rng");

    public static Task<BackendCapabilities> GetCapabilitiesAsync(InteropRun run) =>
        SampleProcess.GetCapabilitiesAsync(run, "rng-capabilities", DllPath);

    /// <summary>Starts the backend and waits until it has created its listening socket.</summary>
    public static async Task<RngSampleBackend> StartAsync(InteropRun run, string socketPath, string name = "rng-backend", TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(run);
        File.Delete(socketPath);
        var process = SampleProcess.Start(run, name, [DllPath, "--socket-path", socketPath, "--log-level", "Debug"], timeout, "rng backend");
        var backend = new RngSampleBackend(process, socketPath);
        await SampleProcess.WaitUntilListeningAsync(run, process, backend, socketPath, "rng backend").ConfigureAwait(false);
        return backend;
    }

    /// <summary>"fail:"/"crit:" entries with their indented message lines.</summary>
    public IReadOnlyList<string> ErrorEntries() => SampleProcess.ErrorEntries(LogFile.ReadLines(LogPath));

    /// <summary>Value of the last "acked virtio features 0x..." log line (the frontend's SET_FEATURES), if any.</summary>
    public ulong? LastAckedFeatures() => SampleProcess.LastAckedFeatures(LogPath);

    /// <summary>The request sequence with consecutive repeats collapsed ("SET_VRING_CALL x2").</summary>
    public string RequestSequence() => SampleNetBackend.Collapse(SampleProcess.Requests(LogPath));

    /// <summary>Graceful stop (SIGTERM: the generic host stops the backend), then kill by PID.</summary>
    public Task StopAsync() => Process.StopAsync(TimeSpan.FromSeconds(10));

    public ValueTask DisposeAsync() => Process.DisposeAsync();
}
