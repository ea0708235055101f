using System.Globalization;
using System.Text.RegularExpressions;

namespace VhostCompat.InteropTests.Harness;

/// <summary>How to boot the virtio-rng interop guest.</summary>
public sealed class RngGuestOptions
{
    /// <summary>vhost-user socket; the backend listens on it and QEMU connects.</summary>
    public required string SocketPath { get; init; }

    public int MemoryMb { get; init; } = 256;

    /// <summary>
    /// Extra vhost-user-rng-pci properties, e.g. "vectors=0". Unlike virtio-net-pci, QEMU 7.2 under TCG does not
    /// crash with MSI-X on vhost-user-rng-pci, so none are added by default.
    /// </summary>
    public string DeviceProperties { get; init; } = string.Empty;

    /// <summary>Bytes per read of /dev/hwrng.</summary>
    public int BytesPerRead { get; init; } = 64;

    /// <summary>Number of reads the guest makes.</summary>
    public int Reads { get; init; } = 3;

    public string Accelerator { get; init; } = Environment.GetEnvironmentVariable("VHOSTCOMPAT_QEMU_ACCEL") is { Length: > 0 } a ? a : "tcg";

    /// <summary>Hard bound on QEMU's lifetime.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromMinutes(5);
}

/// <summary>One read of /dev/hwrng as the guest reported it.</summary>
public sealed record RngRead(int Number, int Count, byte[] Bytes);

/// <summary>
/// QEMU (-device vhost-user-rng-pci) booting the Debian kernel with the virtio-rng busybox initramfs
/// (scripts/build-initramfs-rng.sh). Console, stdout, stderr and QMP live in the run directory; the process
/// is bounded and killed by PID.
/// </summary>
public sealed class RngQemuGuest : QemuGuestBase
{
    public static readonly Regex StatusLine = new(@"VHOSTCOMPAT: status=0x(?<status>[0-9a-fA-F]+) device=(?<device>0x[0-9a-fA-F]+)", RegexOptions.CultureInvariant);
    public static readonly Regex NoDeviceLine = new(@"VHOSTCOMPAT: no-rngdev.*", RegexOptions.CultureInvariant);
    public static readonly Regex FeaturesLine = new(@"VHOSTCOMPAT: features=(?<bits>[01]+)", RegexOptions.CultureInvariant);
    public static readonly Regex HwrngLine = new(@"VHOSTCOMPAT: hwrng current=(?<current>\S*) available=(?<available>\S*)", RegexOptions.CultureInvariant);
    public static readonly Regex ReadLine = new(@"VHOSTCOMPAT: rng read=(?<n>\d+) bytes=(?<count>\d+) hex=(?<hex>[0-9a-f]*)", RegexOptions.CultureInvariant);
    public static readonly Regex DoneLine = new(@"VHOSTCOMPAT: done uptime=(?<uptime>[0-9.]+)", RegexOptions.CultureInvariant);
    private static readonly Regex StatusOrNoDevice = new(@"VHOSTCOMPAT: (status=0x[0-9a-fA-F]+|no-rngdev)", RegexOptions.CultureInvariant);

    private RngQemuGuest(ExternalProcess process, string consolePath, string qmpPath)
        : base(process, consolePath, qmpPath)
    {
    }

    /// <summary>
    /// True when this QEMU knows the vhost-user-rng-pci device (<c>-device vhost-user-rng-pci,help</c>). Not the full
    /// <c>-device help</c>: that loads every module, and QEMU 10.0 from a private prefix also finds Debian 12's 7.2
    /// modules (/usr/lib/x86_64-linux-gnu/qemu, e.g. ui-opengl.so), refuses them ("Only modules from the same build can
    /// be loaded") and lists nothing.
    /// </summary>
    public static async Task<bool> HasDeviceAsync(InteropRun run, InteropTools tools)
    {
        ArgumentNullException.ThrowIfNull(run);
        ArgumentNullException.ThrowIfNull(tools);
        var helpOptions = new ExternalProcessOptions(
            "qemu-device-help", tools.Qemu, [.. tools.QemuPeer?.DataDirArguments() ?? [], "-nodefaults", "-machine", "none", "-device", "vhost-user-rng-pci,help"], run.Directory, TimeSpan.FromSeconds(30));
        tools.QemuPeer?.ApplyEnvironment(helpOptions.Environment);
        await using var p = ExternalProcess.Start(helpOptions);
        await p.WaitForExitAsync(TimeSpan.FromSeconds(30)).ConfigureAwait(false);
        return (p.ReadStdout() + p.ReadStderr()).Contains("vhost-user-rng-pci options:", StringComparison.Ordinal);
    }

    public static async Task<RngQemuGuest> StartAsync(InteropRun run, InteropTools tools, RngGuestOptions options, string name = "qemu")
    {
        ArgumentNullException.ThrowIfNull(run);
        ArgumentNullException.ThrowIfNull(tools);
        ArgumentNullException.ThrowIfNull(options);
        var initrd = await RngInitramfs.GetAsync(tools).ConfigureAwait(false);
        var append = "console=ttyS0 panic=-1 quiet"
            + " vhostcompat.count=" + options.BytesPerRead.ToString(CultureInfo.InvariantCulture)
            + " vhostcompat.reads=" + options.Reads.ToString(CultureInfo.InvariantCulture);
        var (process, console, qmp) = StartQemu(run, tools, new Launch(name, options.Accelerator, 1, options.MemoryMb, options.Timeout, initrd, append)
        {
            DeviceArguments =
            [
                "-chardev", "socket,id=c0,path=" + options.SocketPath,
                "-device", "vhost-user-rng-pci,chardev=c0,id=rng0" + (options.DeviceProperties.Length > 0 ? "," + options.DeviceProperties : string.Empty),
            ],
            StdoutArtifact = true,
        });
        return new RngQemuGuest(process, console, qmp);
    }

    /// <summary>The guest's status line, or the no-device line, or null (nothing in time / QEMU exited).</summary>
    public Task<Match?> WaitForStatusAsync(TimeSpan timeout) => WaitForConsoleAsync(StatusOrNoDevice, timeout);

    /// <summary>Every "rng read=" line printed so far.</summary>
    public IReadOnlyList<RngRead> Reads() =>
        LogFile.ReadLines(ConsolePath)
            .Select(l => ReadLine.Match(l))
            .Where(m => m.Success)
            .Select(m => new RngRead(
                int.Parse(m.Groups["n"].Value, CultureInfo.InvariantCulture),
                int.Parse(m.Groups["count"].Value, CultureInfo.InvariantCulture),
                Convert.FromHexString(m.Groups["hex"].Value.Length % 2 == 0 ? m.Groups["hex"].Value : m.Groups["hex"].Value[..^1])))
            .ToList();

    /// <summary>Console lines printed by the guest's /init (prefix "VHOSTCOMPAT: ").</summary>
    public IReadOnlyList<string> GuestLines() =>
        LogFile.ReadLines(ConsolePath).Where(l => l.Contains("VHOSTCOMPAT: ", StringComparison.Ordinal)).ToList();
}
