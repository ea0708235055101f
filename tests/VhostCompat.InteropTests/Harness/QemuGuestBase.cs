using System.Globalization;
using System.Text.RegularExpressions;

namespace VhostCompat.InteropTests.Harness;

/// <summary>
/// What the interop guests (<see cref="QemuGuest"/>, <see cref="RngQemuGuest"/>, <see cref="BlockGuest"/>) share: QEMU
/// on q35 with a shared memfd, booting the Debian kernel with a busybox initramfs, its serial console in a file and
/// its QMP socket in the run directory. The process is bounded by a hard timeout and killed by PID.
/// </summary>
public abstract class QemuGuestBase : IAsyncDisposable
{
    private protected QemuGuestBase(ExternalProcess process, string consolePath, string qmpPath)
    {
        Process = process;
        ConsolePath = consolePath;
        QmpPath = qmpPath;
    }

    public ExternalProcess Process { get; }

    /// <summary>Serial console (ttyS0) of the guest.</summary>
    public string ConsolePath { get; }

    public string QmpPath { get; }

    /// <summary>First console line matching <paramref name="pattern"/>, or null on timeout / QEMU exit.</summary>
    public Task<Match?> WaitForConsoleAsync(Regex pattern, TimeSpan timeout) =>
        LogFile.WaitForLineAsync(ConsolePath, pattern, timeout, Process);

    public Task<bool> WaitForExitAsync(TimeSpan timeout) => Process.WaitForExitAsync(timeout);

    /// <summary>
    /// What was observed when a wait on this guest timed out: whether QEMU still runs (or its exit code), and the last
    /// console lines, so that a failure message says where the guest was rather than only what did not happen.
    /// </summary>
    public string Observed(int lines = 6)
    {
        var state = Process.HasExited ? $"QEMU exited with {Process.ExitCode?.ToString(CultureInfo.InvariantCulture) ?? "?"}" : "QEMU still running";
        var tail = LogFile.ReadLines(ConsolePath).Where(l => l.Length > 0).TakeLast(lines);
        return $"{state}; last console lines: {string.Join(" | ", tail)}";
    }

    /// <summary>QEMU stderr lines that are not warnings (a clean boot/poweroff prints none).</summary>
    public IReadOnlyList<string> StderrErrorLines() =>
        LogFile.ReadLines(Process.StderrPath).Where(l => !l.Contains("warning:", StringComparison.OrdinalIgnoreCase)).ToList();

    /// <summary>
    /// QEMU 7.2 stderr lines expected when a vhost-user backend goes away under a running guest: the stop path still
    /// writes to the closed socket ("Failed to set msg fds."), cannot read the ring bases back ("vhost VQ N ring restore
    /// failed: -22", it then restores them from the used index), and the first failed reconnect is reported once.
    /// </summary>
    public static readonly IReadOnlyList<string> ExpectedDisconnectNoise =
    [
        "Failed to set msg fds.",
        "ring restore failed:",
        "Unable to connect character device c0: Failed to connect to",
    ];

    /// <summary>Error lines other than <see cref="ExpectedDisconnectNoise"/> (after a backend was killed or upgraded).</summary>
    public IReadOnlyList<string> StderrErrorLinesBeyondDisconnect() =>
        StderrErrorLines().Where(l => !ExpectedDisconnectNoise.Any(n => l.Contains(n, StringComparison.Ordinal))).ToList();

    public IReadOnlyList<string> StderrWarningLines() =>
        LogFile.ReadLines(Process.StderrPath).Where(l => l.Contains("warning:", StringComparison.OrdinalIgnoreCase)).ToList();

    /// <summary>Connects to QEMU's QMP socket (the guest must still be running).</summary>
    public Task<QmpClient> ConnectQmpAsync(CancellationToken cancellationToken) => QmpClient.ConnectAsync(QmpPath, cancellationToken);

    /// <summary>Asks QEMU to quit via QMP, then stops the process by PID if it is still there.</summary>
    public async ValueTask DisposeAsync()
    {
        if (!Process.HasExited)
        {
            try
            {
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                await using var qmp = await ConnectQmpAsync(cts.Token).ConfigureAwait(false);
                await qmp.ExecuteAsync("quit", null, cts.Token).ConfigureAwait(false);
                await Process.WaitForExitAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
            }
            catch (Exception e) when (e is IOException or OperationCanceledException or System.Net.Sockets.SocketException or InvalidOperationException or System.Text.Json.JsonException)
            {
                // fall through to the signal
            }
        }

        await Process.DisposeAsync().ConfigureAwait(false);
        GC.SuppressFinalize(this);
    }

    /// <summary>How one guest's QEMU is started: the common machine plus its own device arguments.</summary>
    private protected sealed record Launch(string Name, string Accelerator, int Cpus, int MemoryMb, TimeSpan Timeout, string Initrd, string Append)
    {
        /// <summary>Arguments between -qmp and -kernel: the vhost-user chardev and the device.</summary>
        public IReadOnlyList<string> DeviceArguments { get; init; } = [];

        /// <summary>Appended after -append.</summary>
        public IEnumerable<string> ExtraArguments { get; init; } = [];

        /// <summary>Also list QEMU's stdout among the run's artifacts.</summary>
        public bool StdoutArtifact { get; init; }

        /// <summary>The -machine type ("q35", "pc-q35-7.2", ...).</summary>
        public string Machine { get; init; } = "q35";
    }

    /// <summary>
    /// Deletes a leftover console file and QMP socket of <c>launch.Name</c>, starts QEMU and registers its console and
    /// stderr (and stdout, if asked) as artifacts of <paramref name="run"/>.
    /// </summary>
    private protected static (ExternalProcess Process, string Console, string Qmp) StartQemu(InteropRun run, InteropTools tools, Launch launch)
    {
        var name = launch.Name;
        var console = run.PathFor(name + ".console");
        var qmp = run.PathFor(name + ".qmp");
        File.Delete(console);
        File.Delete(qmp);
        var mem = launch.MemoryMb.ToString(CultureInfo.InvariantCulture) + "M";
        var args = new List<string>(tools.QemuPeer?.DataDirArguments() ?? [])
        {
            "-name", name,
            "-machine", $"{launch.Machine},accel={launch.Accelerator},memory-backend=mem",
            "-cpu", launch.Accelerator == "tcg" ? "max" : "host,-arch-capabilities",
            "-smp", launch.Cpus.ToString(CultureInfo.InvariantCulture),
            "-m", mem,
            "-object", $"memory-backend-memfd,id=mem,size={mem},share=on",
            "-nodefaults", "-display", "none", "-no-reboot",
            "-serial", "file:" + console,
            "-qmp", $"unix:{qmp},server=on,wait=off",
        };
        args.AddRange(launch.DeviceArguments);
        args.AddRange(["-kernel", tools.Kernel, "-initrd", launch.Initrd, "-append", launch.Append]);
        args.AddRange(launch.ExtraArguments);

        var processOptions = new ExternalProcessOptions(name, tools.Qemu, args, run.Directory, launch.Timeout);
        tools.QemuPeer?.ApplyEnvironment(processOptions.Environment);
        var process = ExternalProcess.Start(processOptions);
        run.AddArtifact($"guest console ({name})", console);
        run.AddArtifact($"QEMU stderr ({name}, pid {process.Pid})", process.StderrPath);
        if (launch.StdoutArtifact)
        {
            run.AddArtifact($"QEMU stdout ({name})", process.StdoutPath);
        }

        return (process, console, qmp);
    }
}
