using System.Globalization;
using System.Text.RegularExpressions;

namespace VhostCompat.InteropTests.Harness;

/// <summary>
/// qemu-storage-daemon (QEMU's own libvhost-user backend) exporting a raw image file as vhost-user-blk on a Unix
/// socket, started the way the reference harness (blk/qsd-blk.sh) starts it: <c>--blockdev driver=file,...,cache.direct=on,aio=threads</c>,
/// <c>--export type=vhost-user-blk,...,writable=on,num-queues=N</c> and a QMP monitor in the run directory (used to
/// quit it). Bounded by a hard timeout and stopped by PID.
/// </summary>
public sealed partial class StorageDaemon : IAsyncDisposable
{
    /// <summary>The qemu-storage-daemon binary: VHOSTCOMPAT_QSD, else /usr/bin/qemu-storage-daemon (Debian's qemu-system-x86 7.2).</summary>
    public static string BinaryPath =>
        Environment.GetEnvironmentVariable("VHOSTCOMPAT_QSD") is { Length: > 0 } p ? p : "/usr/bin/qemu-storage-daemon";

    /// <summary>The version series the tests were measured with.</summary>
    public const string VersionSeries = "7.2";

    private StorageDaemon(ExternalProcess process, string socketPath, string qmpPath, string imagePath)
    {
        Process = process;
        SocketPath = socketPath;
        QmpPath = qmpPath;
        ImagePath = imagePath;
    }

    public ExternalProcess Process { get; }

    /// <summary>The vhost-user-blk socket qsd listens on.</summary>
    public string SocketPath { get; }

    public string QmpPath { get; }

    public string ImagePath { get; }

    [GeneratedRegex(@"qemu-storage-daemon version (?<v>[0-9][0-9.]*)", RegexOptions.CultureInvariant)]
    private static partial Regex VersionLine();

    /// <summary>
    /// The daemon's version, after checking it is there and of <see cref="VersionSeries"/>: missing or another version
    /// skips the calling test, or fails it when interop is required (<see cref="PeerCheck.SkipOrFail"/>).
    /// </summary>
    public static string Require()
    {
        var (version, problem) = VersionOf(BinaryPath);
        PeerCheck.SkipOrFail(problem);
        return version!;
    }

    /// <summary>Runs <c>qemu-storage-daemon --version</c>; returns the version, or why it cannot be used.</summary>
    public static (string? Version, string? Problem) VersionOf(string binary)
    {
        const string install = "apt-get install qemu-system-x86 (it ships qemu-storage-daemon), or set VHOSTCOMPAT_QSD";
        if (!File.Exists(binary))
        {
            return (null, $"qemu-storage-daemon missing: {binary} ({install})");
        }

        var psi = new System.Diagnostics.ProcessStartInfo(binary) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add("--version");
        using var p = System.Diagnostics.Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        var output = p.StandardOutput.ReadToEnd() + stderr.GetAwaiter().GetResult();
        if (!p.WaitForExit(TimeSpan.FromSeconds(20)))
        {
            p.Kill(entireProcessTree: true);
            return (null, $"'{binary} --version' did not finish in 20 s");
        }

        var m = VersionLine().Match(output);
        if (!m.Success)
        {
            return (null, $"'{binary} --version' printed no 'qemu-storage-daemon version' line: {output.Trim()}");
        }

        var v = m.Groups["v"].Value;
        return v.StartsWith(VersionSeries + ".", StringComparison.Ordinal)
            ? (v, null)
            : (v, $"{binary} is qemu-storage-daemon {v}, expected {VersionSeries}.x");
    }

    /// <summary>Creates a zero-filled raw image of <paramref name="sizeBytes"/> (fully allocated, like the reference harness's dd).</summary>
    public static void CreateImage(string path, long sizeBytes)
    {
        using var f = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        var zeros = new byte[1 << 20];
        for (long written = 0; written < sizeBytes; written += zeros.Length)
        {
            f.Write(zeros, 0, (int)Math.Min(zeros.Length, sizeBytes - written));
        }

        f.Flush(flushToDisk: true);
    }

    /// <summary>
    /// Starts qsd exporting <paramref name="imagePath"/> on <paramref name="socketPath"/> with
    /// <paramref name="numQueues"/> queues and waits until the socket exists (or qsd exits: then this throws with its log).
    /// </summary>
    public static async Task<StorageDaemon> StartAsync(InteropRun run, string imagePath, string socketPath, int numQueues, string name = "qsd", TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(run);
        File.Delete(socketPath);
        var qmp = run.PathFor(name + ".qmp");
        File.Delete(qmp);
        var q = numQueues.ToString(CultureInfo.InvariantCulture);
        string[] args =
        [
            "--blockdev", $"driver=file,node-name=n,filename={imagePath},cache.direct=on,aio=threads",
            "--export", $"type=vhost-user-blk,id=e,node-name=n,addr.type=unix,addr.path={socketPath},writable=on,num-queues={q}",
            "--chardev", $"socket,id=m,path={qmp},server=on,wait=off", "--monitor", "chardev=m",
        ];
        var process = ExternalProcess.Start(new ExternalProcessOptions(name, BinaryPath, args, run.Directory, timeout ?? TimeSpan.FromMinutes(8)));
        run.AddArtifact($"qemu-storage-daemon stderr ({name}, pid {process.Pid})", process.StderrPath);
        run.AddArtifact($"qemu-storage-daemon stdout ({name})", process.StdoutPath);
        var daemon = new StorageDaemon(process, socketPath, qmp, imagePath);
        if (!await LogFile.WaitForPathAsync(socketPath, TimeSpan.FromSeconds(30), process).ConfigureAwait(false))
        {
            var why = process.HasExited ? $"it exited with {process.ExitCode}" : "nothing within 30 s";
            var log = LogFile.Tail(process.StderrPath, 4000);
            await daemon.DisposeAsync().ConfigureAwait(false);
            throw new Xunit.Sdk.XunitException($"qemu-storage-daemon did not create {socketPath} ({why}): {process.CommandLine}\n{log}");
        }

        return daemon;
    }

    /// <summary>Asks qsd to quit over QMP (it flushes the image), then stops the process by PID if it is still there.</summary>
    public async ValueTask DisposeAsync()
    {
        if (!Process.HasExited)
        {
            try
            {
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                await using var qmp = await QmpClient.ConnectAsync(QmpPath, cts.Token).ConfigureAwait(false);
                await qmp.ExecuteAsync("quit", null, cts.Token).ConfigureAwait(false);
                await Process.WaitForExitAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
            }
            catch (Exception e) when (e is IOException or OperationCanceledException or System.Net.Sockets.SocketException or InvalidOperationException or System.Text.Json.JsonException)
            {
                // fall through to the signal
            }
        }

        await Process.DisposeAsync().ConfigureAwait(false);
    }
}
