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
public sealed class QemuGuest : IAsyncDisposable
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
    {
        Process = process;
        ConsolePath = consolePath;
        QmpPath = qmpPath;
    }

    public ExternalProcess Process { get; }

    /// <summary>Serial console (ttyS0) of the guest.</summary>
    public string ConsolePath { get; }

    public string QmpPath { get; }

    public string StderrPath => Process.StderrPath;

    public static async Task<QemuGuest> StartAsync(InteropRun run, InteropTools tools, QemuGuestOptions options, string name = "qemu")
    {
        ArgumentNullException.ThrowIfNull(run);
        ArgumentNullException.ThrowIfNull(tools);
        ArgumentNullException.ThrowIfNull(options);
        var initrd = await Initramfs.GetAsync(tools).ConfigureAwait(false);
        var console = run.PathFor(name + ".console");
        var qmp = run.PathFor(name + ".qmp");
        File.Delete(console);
        File.Delete(qmp);
        if (options.QemuIsServer)
        {
            File.Delete(options.SocketPath);
        }

        var props = options.NetDeviceProperties;
        if (!("," + props).Contains(",vectors=", StringComparison.Ordinal))
        {
            props = "vectors=0" + (props.Length > 0 ? "," + props : string.Empty);
        }

        var mem = options.MemoryMb.ToString(CultureInfo.InvariantCulture) + "M";
        var chardev = "socket,id=c0,path=" + options.SocketPath + (options.QemuIsServer ? ",server=on,wait=off" : string.Empty)
            + (options.ReconnectSeconds is { } reconnect && !options.QemuIsServer ? ",reconnect=" + reconnect.ToString(CultureInfo.InvariantCulture) : string.Empty);
        var append = "console=ttyS0 panic=-1 quiet" + string.Concat(options.GuestParameters.Select(kv => $" vhostcompat.{kv.Key}={kv.Value}"));
        var args = new List<string>
        {
            "-name", name,
            "-machine", $"q35,accel={options.Accelerator},memory-backend=mem",
            "-cpu", options.Accelerator == "tcg" ? "max" : "host,-arch-capabilities",
            "-smp", "1",
            "-m", mem,
            "-object", $"memory-backend-memfd,id=mem,size={mem},share=on",
            "-nodefaults", "-display", "none", "-no-reboot",
            "-serial", "file:" + console,
            "-qmp", $"unix:{qmp},server=on,wait=off",
            "-chardev", chardev,
            "-netdev", "vhost-user,id=n0,chardev=c0",
            "-device", $"virtio-net-pci,netdev=n0,id=net0,mac={options.Mac},{props}",
            "-kernel", tools.Kernel,
            "-initrd", initrd,
            "-append", append,
        };
        args.AddRange(options.ExtraArguments);

        var process = ExternalProcess.Start(new ExternalProcessOptions(name, tools.Qemu, args, run.Directory, options.Timeout));
        run.AddArtifact($"guest console ({name})", console);
        run.AddArtifact($"QEMU stderr ({name}, pid {process.Pid})", process.StderrPath);
        run.AddArtifact($"QEMU stdout ({name})", process.StdoutPath);
        return new QemuGuest(process, console, qmp);
    }

    /// <summary>First console line matching <paramref name="pattern"/>, or null on timeout / QEMU exit.</summary>
    public Task<Match?> WaitForConsoleAsync(Regex pattern, TimeSpan timeout) =>
        LogFile.WaitForLineAsync(ConsolePath, pattern, timeout, Process);

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

    public Task<bool> WaitForExitAsync(TimeSpan timeout) => Process.WaitForExitAsync(timeout);

    /// <summary>Console lines printed by the guest's /init (prefix "VHOSTCOMPAT: ").</summary>
    public IReadOnlyList<string> GuestLines() =>
        LogFile.ReadLines(ConsolePath).Where(l => l.Contains("VHOSTCOMPAT: ", StringComparison.Ordinal)).ToList();

    /// <summary>QEMU stderr lines that are not warnings (a clean boot/poweroff prints none).</summary>
    public IReadOnlyList<string> StderrErrorLines() =>
        LogFile.ReadLines(Process.StderrPath).Where(l => !l.Contains("warning:", StringComparison.OrdinalIgnoreCase)).ToList();

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
    }
}
