using System.Globalization;
using System.Text.RegularExpressions;

namespace VhostCompat.InteropTests.Harness;

/// <summary>How to boot the interop guest.</summary>
public sealed class QemuGuestOptions
{
    /// <summary>vhost-user socket. By default the backend listens on it and QEMU connects.</summary>
    public required string SocketPath { get; init; }

    /// <summary>true: QEMU listens (chardev server=on,wait=off) and the backend connects.</summary>
    public bool QemuIsServer { get; init; }

    /// <summary>
    /// QEMU as client only: add <c>reconnect=N</c> to the chardev, so QEMU reconnects every N seconds after the backend
    /// went away (a backend restart/upgrade under a running guest). Null (default): no reconnect.
    /// </summary>
    public int? ReconnectSeconds { get; init; }

    public int MemoryMb { get; init; } = 256;

    public string Mac { get; init; } = "52:54:00:12:34:56";

    /// <summary>
    /// Extra virtio-net-pci properties, e.g. "mrg_rxbuf=off". "vectors=0" is always added unless given here:
    /// QEMU 7.2 under TCG SIGSEGVs at DRIVER_OK with MSI-X + vhost-user.
    /// </summary>
    public string NetDeviceProperties { get; init; } = string.Empty;

    /// <summary>Guest /init switches without the "vhostcompat." prefix, e.g. mode=ping, peer=10.0.0.1.</summary>
    public IDictionary<string, string> GuestParameters { get; } = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>"tcg" (KVM on these machines cannot boot a stock kernel).</summary>
    public string Accelerator { get; init; } = Environment.GetEnvironmentVariable("VHOSTCOMPAT_QEMU_ACCEL") is { Length: > 0 } a ? a : "tcg";

    /// <summary>Hard bound on QEMU's lifetime.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromMinutes(5);

    public IList<string> ExtraArguments { get; } = [];

    /// <summary>
    /// The machine type: "q35" (the binary's newest q35) or a versioned one such as "pc-q35-7.2", which both QEMU 7.2
    /// and 10.0 can run and migrate between.
    /// </summary>
    public string Machine { get; init; } = "q35";
}

/// <summary>The guest's report of its virtio-net device (console lines of the initramfs /init).</summary>
public sealed record GuestNetStatus(int Status, ulong Features, string FeatureBits, TimeSpan SeenAfter)
{
    public const int Acknowledge = 1;
    public const int Driver = 2;
    public const int DriverOk = 4;
    public const int FeaturesOk = 8;

    public bool IsDriverOk => (Status & DriverOk) != 0;
}

/// <summary>
/// QEMU (virtio-net-pci + -netdev vhost-user) booting the Debian kernel with the busybox initramfs. Console,
/// stdout, stderr and the QMP socket live in the run directory; the process is bounded and killed by PID.
/// </summary>
public sealed class QemuGuest : QemuGuestBase
{
    public static readonly Regex InitLine = new(@"VHOSTCOMPAT: init uptime=(?<uptime>[0-9.]+)", RegexOptions.CultureInvariant);
    public static readonly Regex StatusLine = new(@"VHOSTCOMPAT: status=0x(?<status>[0-9a-fA-F]+)", RegexOptions.CultureInvariant);
    public static readonly Regex FeaturesLine = new(@"VHOSTCOMPAT: features=(?<bits>[01]+)", RegexOptions.CultureInvariant);
    public static readonly Regex NoNetdevLine = new(@"VHOSTCOMPAT: no-netdev", RegexOptions.CultureInvariant);
    public static readonly Regex DoneLine = new(@"VHOSTCOMPAT: done uptime=(?<uptime>[0-9.]+)", RegexOptions.CultureInvariant);
    public static readonly Regex PingLine = new(@"VHOSTCOMPAT: ping transmitted=(?<tx>\d+) received=(?<rx>\d+)", RegexOptions.CultureInvariant);
    public static readonly Regex ArpLine = new(@"VHOSTCOMPAT: arp peer=(?<peer>\S+) attempts=(?<attempts>\d+) ok=(?<ok>[01])", RegexOptions.CultureInvariant);
    public static readonly Regex ServingLine = new(@"VHOSTCOMPAT: serving ip=(?<ip>\S+)", RegexOptions.CultureInvariant);
    public static readonly Regex ServedLine = new(@"VHOSTCOMPAT: served echo_requests=(?<requests>\d+) echo_replies=(?<replies>\d+) timed_out=(?<timedout>[01])", RegexOptions.CultureInvariant);
    /// <summary>The guest's interface counters, printed just before it powers off.</summary>
    public static readonly Regex CountersLine = new(@"VHOSTCOMPAT: tx_packets=(?<tx>\d+) rx_packets=(?<rx>\d+)", RegexOptions.CultureInvariant);
    private static readonly Regex StatusOrNoNetdev = new(@"VHOSTCOMPAT: (status=0x[0-9a-fA-F]+|no-netdev)", RegexOptions.CultureInvariant);

    private QemuGuest(ExternalProcess process, string consolePath, string qmpPath)
        : base(process, consolePath, qmpPath)
    {
    }

    public string StderrPath => Process.StderrPath;

    public static async Task<QemuGuest> StartAsync(InteropRun run, InteropTools tools, QemuGuestOptions options, string name = "qemu")
    {
        ArgumentNullException.ThrowIfNull(run);
        ArgumentNullException.ThrowIfNull(tools);
        ArgumentNullException.ThrowIfNull(options);
        var initrd = await Initramfs.GetAsync(tools).ConfigureAwait(false);
        if (options.QemuIsServer)
        {
            File.Delete(options.SocketPath);
        }

        var props = options.NetDeviceProperties;
        if (!("," + props).Contains(",vectors=", StringComparison.Ordinal))
        {
            props = "vectors=0" + (props.Length > 0 ? "," + props : string.Empty);
        }

        var chardev = "socket,id=c0,path=" + options.SocketPath + (options.QemuIsServer ? ",server=on,wait=off" : string.Empty)
            + (options.ReconnectSeconds is { } reconnect && !options.QemuIsServer ? ",reconnect=" + reconnect.ToString(CultureInfo.InvariantCulture) : string.Empty);
        var append = "console=ttyS0 panic=-1 quiet" + string.Concat(options.GuestParameters.Select(kv => $" vhostcompat.{kv.Key}={kv.Value}"));
        var (process, console, qmp) = StartQemu(run, tools, new Launch(name, options.Accelerator, 1, options.MemoryMb, options.Timeout, initrd, append)
        {
            DeviceArguments =
            [
                "-chardev", chardev,
                "-netdev", "vhost-user,id=n0,chardev=c0",
                "-device", $"virtio-net-pci,netdev=n0,id=net0,mac={options.Mac},{props}",
            ],
            ExtraArguments = options.ExtraArguments,
            StdoutArtifact = true,
            Machine = options.Machine,
        });
        return new QemuGuest(process, console, qmp);
    }

    /// <summary>Waits for the guest's status + features lines; null when they do not come (see the console for why).</summary>
    public async Task<GuestNetStatus?> WaitForNetStatusAsync(TimeSpan timeout)
    {
        var m = await WaitForConsoleAsync(StatusOrNoNetdev, timeout).ConfigureAwait(false);
        if (m is null || !m.Value.Contains("status=", StringComparison.Ordinal))
        {
            return null;
        }

        var seen = Process.Elapsed;
        // The features line is printed right after the status line.
        var f = await WaitForConsoleAsync(FeaturesLine, TimeSpan.FromSeconds(20)).ConfigureAwait(false);
        var s = StatusLine.Match(m.Value);
        if (f is null || !s.Success)
        {
            return null;
        }

        var bits = f.Groups["bits"].Value;
        return new GuestNetStatus(
            int.Parse(s.Groups["status"].Value, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture),
            VirtioNetFeatures.FromBitString(bits),
            bits,
            seen);
    }

    /// <summary>Console lines printed by the guest's /init (prefix "VHOSTCOMPAT: ").</summary>
    public IReadOnlyList<string> GuestLines() =>
        LogFile.ReadLines(ConsolePath).Where(l => l.Contains("VHOSTCOMPAT: ", StringComparison.Ordinal)).ToList();
}
