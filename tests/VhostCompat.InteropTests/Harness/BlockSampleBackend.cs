using System.Globalization;
using System.Text.RegularExpressions;

namespace VhostCompat.InteropTests.Harness;

/// <summary>
/// The sample vhost-user-blk backend (samples/Block): <c>dotnet VhostCompat.Samples.Block.dll --socket-path SOCK --image FILE ...</c>.
/// It listens, QEMU connects; its simple-console log (stdout) is checked for fail/crit entries, and it prints
/// <c>requests=N</c> when it exits on SIGTERM.
/// </summary>
public sealed class BlockSampleBackend : IAsyncDisposable
{
    private static readonly Regex RequestsLine = new(@"^requests=(?<n>\d+)(?: resubmitted=\d+)?\s*$", RegexOptions.CultureInvariant | RegexOptions.Multiline);

    private BlockSampleBackend(ExternalProcess process, string socketPath, string imagePath)
    {
        Process = process;
        SocketPath = socketPath;
        ImagePath = imagePath;
    }

    public ExternalProcess Process { get; }

    public string SocketPath { get; }

    public string ImagePath { get; }

    public string LogPath => Process.StdoutPath;

    public static string DllPath => RepositoryLayout.SampleDll("Block", "VhostCompat.Samples.Block");

    /// <summary>"Listening for a vhost-user frontend on PATH" (the SDK's log line once the socket is bound).</summary>
    public static readonly Regex ListeningLine = new(@"Listening for a vhost-user frontend on ", RegexOptions.CultureInvariant);

    /// <summary>--progress: the first completed request, timed by the sample from its own process start.</summary>
    public static readonly Regex FirstRequestLine = new(@"First request completed (?<ms>\d+) ms after process start", RegexOptions.CultureInvariant);

    /// <summary>--progress: the completed-request count, logged every interval while it changes.</summary>
    public static readonly Regex CompletedLine = new(@"Requests completed: (?<n>\d+) \(\+(?<delta>-?\d+)\)", RegexOptions.CultureInvariant);

    /// <summary>SIGUSR1 (an emulated storage stall): a read or write newly held in flight, with the queue's held counts.</summary>
    public static readonly Regex HeldLine = new(@"Held in flight: queue (?<queue>\d+) reads=(?<reads>\d+) writes=(?<writes>\d+)", RegexOptions.CultureInvariant);

    /// <summary>The SDK's queue lines: "Queue N started (size S, enabled E, next avail B)" and the stopped/enabled variants.</summary>
    public static readonly Regex QueueLine = new(@"Queue (?<index>\d+) (?<state>.+?) \(size (?<size>\d+), enabled (?<enabled>\w+), next avail (?<base>\d+)\)", RegexOptions.CultureInvariant);

    /// <summary>
    /// Starts the backend on <paramref name="imagePath"/> (created when <paramref name="createSize"/> is given) and waits until
    /// it listens. Normally a leftover socket file is deleted first and the test waits for the file; with
    /// <paramref name="keepStaleSocket"/> (a restart after a crash) the file is left for the backend to replace and the
    /// test waits for its "Listening" log line instead. <paramref name="stateDirectory"/> is --state-dir (the acked-state
    /// record), <paramref name="progressMs"/> is --progress.
    /// </summary>
    public static async Task<BlockSampleBackend> StartAsync(
        InteropRun run, string socketPath, string imagePath, long? createSize, int queues, string serial,
        bool readOnly = false, string name = "blk-backend", TimeSpan? timeout = null,
        string? stateDirectory = null, int progressMs = 0, bool keepStaleSocket = false, int ioLatencyMs = 0,
        string logLevel = "Information")
    {
        ArgumentNullException.ThrowIfNull(run);
        if (!keepStaleSocket)
        {
            File.Delete(socketPath);
        }

        var args = new List<string>
        {
            DllPath, "--socket-path", socketPath, "--image", imagePath,
            "--queues", queues.ToString(CultureInfo.InvariantCulture), "--serial", serial, "--log-level", logLevel,
        };
        if (createSize is { } size)
        {
            args.Add("--size");
            args.Add(size.ToString(CultureInfo.InvariantCulture));
        }

        if (readOnly)
        {
            args.Add("--read-only");
        }

        if (ioLatencyMs > 0)
        {
            args.Add("--io-latency-ms");
            args.Add(ioLatencyMs.ToString(CultureInfo.InvariantCulture));
        }

        if (stateDirectory is not null)
        {
            args.Add("--state-dir");
            args.Add(stateDirectory);
        }

        if (progressMs > 0)
        {
            args.Add("--progress");
            args.Add(progressMs.ToString(CultureInfo.InvariantCulture));
        }

        var process = SampleProcess.Start(run, name, args, timeout, "backend");
        var backend = new BlockSampleBackend(process, socketPath, imagePath);
        await SampleProcess.WaitUntilListeningAsync(run, process, backend, socketPath, "block backend", keepStaleSocket ? ListeningLine : null).ConfigureAwait(false);
        return backend;
    }

    /// <summary>"fail:"/"crit:" entries (same format rules as the net sample) with their continuation lines.</summary>
    public IReadOnlyList<string> ErrorEntries() =>
        SampleProcess.ErrorEntries(LogFile.ReadLines(LogPath).Concat(LogFile.ReadLines(Process.StderrPath)).ToList());

    /// <summary>The <c>requests=N</c> count printed on a graceful exit, or null.</summary>
    public long? RequestCount()
    {
        var m = RequestsLine.Matches(LogFile.ReadAll(LogPath));
        return m.Count == 0 ? null : long.Parse(m[^1].Groups["n"].Value, CultureInfo.InvariantCulture);
    }

    /// <summary>Requests the sample re-executed because the SDK handed them out again (inflight tracking), from its exit line.</summary>
    public long? ResubmittedCount()
    {
        var m = ResubmittedLine.Matches(LogFile.ReadAll(LogPath));
        return m.Count == 0 ? null : long.Parse(m[^1].Groups["n"].Value, CultureInfo.InvariantCulture);
    }

    /// <summary>Chains the SDK reported for resubmission when the queues started ("N chains to resubmit"), summed.</summary>
    public long ReportedResubmissions() =>
        InflightLine.Matches(LogFile.ReadAll(LogPath)).Sum(m => long.Parse(m.Groups["n"].Value, CultureInfo.InvariantCulture));

    private static readonly Regex ResubmittedLine = new(@"resubmitted=(?<n>\d+)", RegexOptions.CultureInvariant);

    private static readonly Regex InflightLine = new(@"inflight region attached, (?<n>\d+) chains to resubmit", RegexOptions.CultureInvariant);

    /// <summary>SIGTERM, then kill by PID after 10 s.</summary>
    public Task StopAsync() => Process.StopAsync(TimeSpan.FromSeconds(10));

    public ValueTask DisposeAsync() => Process.DisposeAsync();
}
