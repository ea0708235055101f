using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;

namespace VhostCompat.InteropTests.Harness;

/// <summary>How to boot the vhost-user-blk interop guest.</summary>
public sealed class BlockGuestOptions
{
    /// <summary>vhost-user socket the backend listens on (QEMU connects).</summary>
    public required string SocketPath { get; init; }

    /// <summary>"write" (pattern + fdatasync + read-back), "check" (read-back only) or "stress" (crash-recovery workload).</summary>
    public required string Mode { get; init; }

    public required string Tag { get; init; }

    /// <summary>Pattern block offsets of the write/check modes (not used by stress).</summary>
    public IReadOnlyList<long> Offsets { get; init; } = [];

    /// <summary>chardev <c>reconnect=N</c>: QEMU reconnects to a backend that went away every N seconds (null: off).</summary>
    public int? ReconnectSeconds { get; init; }

    /// <summary>More <c>vhostcompat.KEY=VALUE</c> kernel parameters (e.g. the stress region, see build-initramfs-blk.sh).</summary>
    public IDictionary<string, string> GuestParameters { get; } = new SortedDictionary<string, string>(StringComparer.Ordinal);

    /// <summary>num-queues of vhost-user-blk-pci.</summary>
    public int NumQueues { get; init; } = 2;

    /// <summary>packed=on: the guest drives packed virtqueues (the Block sample offers VIRTIO_F_RING_PACKED).</summary>
    public bool PackedRing { get; init; }

    /// <summary>vCPUs: Linux uses min(num-queues, CPUs) hardware queues, so 2 makes both rings carry requests.</summary>
    public int Cpus { get; init; } = 2;

    public int MemoryMb { get; init; } = 256;

    public string Accelerator { get; init; } = Environment.GetEnvironmentVariable("VHOSTCOMPAT_QEMU_ACCEL") is { Length: > 0 } a ? a : "tcg";

    public TimeSpan Timeout { get; init; } = TimeSpan.FromMinutes(3);
}

/// <summary>The guest's "VHOSTCOMPAT: blkdev ..." line: what Linux made of the device.</summary>
public sealed record GuestBlockDevice(int Status, string FeatureBits, long SizeSectors, string Serial, string CacheType, int HardwareQueues, bool ReadOnly)
{
    private static readonly Regex Line = new(
        @"VHOSTCOMPAT: blkdev status=0x(?<status>[0-9a-fA-F]+) features=(?<bits>[01]+) size=(?<size>\d+) serial='(?<serial>[^']*)' cache_type='(?<cache>[^']*)' hw_queues=(?<hwq>\d+) ro=(?<ro>[01])",
        RegexOptions.CultureInvariant);

    public static GuestBlockDevice? Parse(IEnumerable<string> lines)
    {
        ArgumentNullException.ThrowIfNull(lines);
        foreach (var l in lines)
        {
            var m = Line.Match(l);
            if (m.Success)
            {
                return new GuestBlockDevice(
                    int.Parse(m.Groups["status"].Value, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture),
                    m.Groups["bits"].Value,
                    long.Parse(m.Groups["size"].Value, CultureInfo.InvariantCulture),
                    m.Groups["serial"].Value,
                    m.Groups["cache"].Value,
                    int.Parse(m.Groups["hwq"].Value, CultureInfo.InvariantCulture),
                    m.Groups["ro"].Value == "1");
            }
        }

        return null;
    }

    public bool HasFeature(int bit) => bit < FeatureBits.Length && FeatureBits[bit] == '1';
}

/// <summary>
/// QEMU 7.2 with <c>-device vhost-user-blk-pci,chardev=c0,num-queues=N</c> (TCG, memfd share=on) booting the Debian
/// kernel with the block initramfs (scripts/build-initramfs-blk.sh). Bounded by a hard timeout, killed by PID.
/// </summary>
public sealed class BlockGuest : IAsyncDisposable
{
    public static readonly Regex DoneLine = new(@"VHOSTCOMPAT: done uptime=(?<uptime>[0-9.]+)", RegexOptions.CultureInvariant);
    public static readonly Regex InitLine = new(@"VHOSTCOMPAT: init uptime=", RegexOptions.CultureInvariant);
    public static readonly Regex VerdictLine = new(@"VHOSTCOMPAT: blk verdict=(?<verdict>ok|FAIL) phase=(?<phase>\w+) bad=(?<bad>\d+)", RegexOptions.CultureInvariant);
    public static readonly Regex StatusEndLine = new(@"VHOSTCOMPAT: status_end=0x(?<status>[0-9a-fA-F]+)", RegexOptions.CultureInvariant);

    private static readonly SemaphoreSlim BuildGate = new(1, 1);

    private BlockGuest(ExternalProcess process, string consolePath, string qmpPath)
    {
        Process = process;
        ConsolePath = consolePath;
        QmpPath = qmpPath;
    }

    public ExternalProcess Process { get; }

    public string ConsolePath { get; }

    public string QmpPath { get; }

    /// <summary>gcc (for the static guest tool) is an extra peer of the block tests: skip or fail like the others.</summary>
    public static void RequireCompiler()
    {
        if (InteropPrerequisites.FindInPath("gcc") is not null)
        {
            return;
        }

        if (InteropPrerequisites.Required)
        {
            Assert.Fail($"{InteropPrerequisites.RequireVariable} is set, but gcc (needed to build the static guest tool blkpattern.c) is missing: apt-get install gcc libc6-dev");
        }

        Skip.If(true, $"gcc missing (apt-get install gcc libc6-dev); set {InteropPrerequisites.RequireVariable}=1 to make this a failure");
    }

    /// <summary>Builds (once per script/tool/kernel content) the block initramfs into <see cref="Initramfs.CacheDirectory"/>.</summary>
    public static async Task<string> GetInitramfsAsync(InteropTools tools)
    {
        ArgumentNullException.ThrowIfNull(tools);
        var script = RepositoryLayout.Script("build-initramfs-blk.sh");
        var tool = Path.Combine(Path.GetDirectoryName(script)!, "blkpattern.c");
        var hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(
            File.ReadAllText(script) + "\n" + File.ReadAllText(tool) + "\n" + tools.KernelVersion + "\n" + tools.Busybox + "\n" + File.GetLastWriteTimeUtc(tools.Busybox).Ticks)))[..16];
        var output = Path.Combine(Initramfs.CacheDirectory, $"initramfs-blk-{tools.KernelVersion}-{hash}.cpio.gz");
        await BuildGate.WaitAsync().ConfigureAwait(false);
        try
        {
            if (File.Exists(output) && new FileInfo(output).Length > 0)
            {
                return output;
            }

            Directory.CreateDirectory(Initramfs.CacheDirectory);
            var logDir = Path.Combine(Initramfs.CacheDirectory, "initramfs-blk-build-" + Environment.ProcessId);
            await using (var build = ExternalProcess.Start(new ExternalProcessOptions(
                "build-initramfs-blk", "/bin/bash", [script, output, tools.KernelVersion], logDir, TimeSpan.FromMinutes(2))
            {
                Environment = { ["BUSYBOX"] = tools.Busybox },
            }))
            {
                var sw = Stopwatch.StartNew();
                if (!await build.WaitForExitAsync(TimeSpan.FromMinutes(2)).ConfigureAwait(false) || build.ExitCode != 0 || !File.Exists(output))
                {
                    throw new InvalidOperationException(
                        $"building the block guest initramfs failed (exit {build.ExitCode?.ToString(CultureInfo.InvariantCulture) ?? "timeout"} after {sw.Elapsed.TotalSeconds:F1} s): {build.CommandLine}\n" +
                        build.ReadStdout() + build.ReadStderr());
                }
            }

            Directory.Delete(logDir, recursive: true);
            return output;
        }
        finally
        {
            BuildGate.Release();
        }
    }

    public static async Task<BlockGuest> StartAsync(InteropRun run, InteropTools tools, BlockGuestOptions options, string name)
    {
        ArgumentNullException.ThrowIfNull(run);
        ArgumentNullException.ThrowIfNull(tools);
        ArgumentNullException.ThrowIfNull(options);
        var initrd = await GetInitramfsAsync(tools).ConfigureAwait(false);
        var console = run.PathFor(name + ".console");
        var qmp = run.PathFor(name + ".qmp");
        File.Delete(console);
        File.Delete(qmp);
        var mem = options.MemoryMb.ToString(CultureInfo.InvariantCulture) + "M";
        var append = "console=ttyS0 panic=-1 quiet"
            + $" vhostcompat.mode={options.Mode} vhostcompat.tag={options.Tag}"
            + (options.Offsets.Count > 0 ? " vhostcompat.offsets=" + string.Join(',', options.Offsets.Select(o => o.ToString(CultureInfo.InvariantCulture))) : string.Empty)
            + string.Concat(options.GuestParameters.Select(p => $" vhostcompat.{p.Key}={p.Value}"));
        var args = new List<string>
        {
            "-name", name,
            "-machine", $"q35,accel={options.Accelerator},memory-backend=mem",
            "-cpu", options.Accelerator == "tcg" ? "max" : "host,-arch-capabilities",
            "-smp", options.Cpus.ToString(CultureInfo.InvariantCulture),
            "-m", mem,
            "-object", $"memory-backend-memfd,id=mem,size={mem},share=on",
            "-nodefaults", "-display", "none", "-no-reboot",
            "-serial", "file:" + console,
            "-qmp", $"unix:{qmp},server=on,wait=off",
            "-chardev", "socket,id=c0,path=" + options.SocketPath
                + (options.ReconnectSeconds is { } reconnect ? ",reconnect=" + reconnect.ToString(CultureInfo.InvariantCulture) : string.Empty),
            // vectors=0: QEMU 7.2 under TCG crashes at DRIVER_OK with MSI-X + vhost-user (see QemuGuestOptions).
            "-device", $"vhost-user-blk-pci,chardev=c0,id=vblk0,num-queues={options.NumQueues.ToString(CultureInfo.InvariantCulture)},vectors=0{(options.PackedRing ? ",packed=on" : "")}",
            "-kernel", tools.Kernel,
            "-initrd", initrd,
            "-append", append,
        };
        var process = ExternalProcess.Start(new ExternalProcessOptions(name, tools.Qemu, args, run.Directory, options.Timeout));
        run.AddArtifact($"guest console ({name})", console);
        run.AddArtifact($"QEMU stderr ({name}, pid {process.Pid})", process.StderrPath);
        return new BlockGuest(process, console, qmp);
    }

    public Task<Match?> WaitForConsoleAsync(Regex pattern, TimeSpan timeout) =>
        LogFile.WaitForLineAsync(ConsolePath, pattern, timeout, Process);

    public Task<bool> WaitForExitAsync(TimeSpan timeout) => Process.WaitForExitAsync(timeout);

    public IReadOnlyList<string> GuestLines() =>
        LogFile.ReadLines(ConsolePath).Where(l => l.Contains("VHOSTCOMPAT: ", StringComparison.Ordinal))
            .Select(l => l[l.IndexOf("VHOSTCOMPAT: ", StringComparison.Ordinal)..]).ToList();

    public GuestBlockDevice? Device() => GuestBlockDevice.Parse(GuestLines());

    /// <summary>The guest tool's verdict line (ok/FAIL, phase, bad block count), or null.</summary>
    public Match? Verdict() => GuestLines().Select(l => VerdictLine.Match(l)).FirstOrDefault(m => m.Success);

    public IReadOnlyList<string> StderrErrorLines() =>
        LogFile.ReadLines(Process.StderrPath).Where(l => !l.Contains("warning:", StringComparison.OrdinalIgnoreCase)).ToList();

    /// <summary>QMP quit, then stop by PID.</summary>
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
