using System.Globalization;
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

    /// <summary>MSI-X vectors of vhost-user-blk-pci; 0 (INTx, the default) because QEMU 7.2 under TCG crashes at DRIVER_OK with MSI-X + vhost-user.</summary>
    public int Vectors { get; init; }

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
public sealed class BlockGuest : QemuGuestBase
{
    public static readonly Regex DoneLine = new(@"VHOSTCOMPAT: done uptime=(?<uptime>[0-9.]+)", RegexOptions.CultureInvariant);
    public static readonly Regex InitLine = new(@"VHOSTCOMPAT: init uptime=", RegexOptions.CultureInvariant);
    public static readonly Regex VerdictLine = new(@"VHOSTCOMPAT: blk verdict=(?<verdict>ok|FAIL) phase=(?<phase>\w+) bad=(?<bad>\d+)", RegexOptions.CultureInvariant);
    public static readonly Regex StatusEndLine = new(@"VHOSTCOMPAT: status_end=0x(?<status>[0-9a-fA-F]+)", RegexOptions.CultureInvariant);

    private static readonly SemaphoreSlim BuildGate = new(1, 1);

    private BlockGuest(ExternalProcess process, string consolePath, string qmpPath)
        : base(process, consolePath, qmpPath)
    {
    }

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
    public static Task<string> GetInitramfsAsync(InteropTools tools) =>
        InitramfsBuild.GetAsync(tools, BuildGate, "initramfs-blk", "block guest initramfs", "blkpattern.c");

    public static async Task<BlockGuest> StartAsync(InteropRun run, InteropTools tools, BlockGuestOptions options, string name)
    {
        ArgumentNullException.ThrowIfNull(run);
        ArgumentNullException.ThrowIfNull(tools);
        ArgumentNullException.ThrowIfNull(options);
        var initrd = await GetInitramfsAsync(tools).ConfigureAwait(false);
        var append = "console=ttyS0 panic=-1 quiet"
            + $" vhostcompat.mode={options.Mode} vhostcompat.tag={options.Tag}"
            + (options.Offsets.Count > 0 ? " vhostcompat.offsets=" + string.Join(',', options.Offsets.Select(o => o.ToString(CultureInfo.InvariantCulture))) : string.Empty)
            + string.Concat(options.GuestParameters.Select(p => $" vhostcompat.{p.Key}={p.Value}"));
        var (process, console, qmp) = StartQemu(run, tools, new Launch(name, options.Accelerator, options.Cpus, options.MemoryMb, options.Timeout, initrd, append)
        {
            DeviceArguments =
            [
                "-chardev", "socket,id=c0,path=" + options.SocketPath
                    + (options.ReconnectSeconds is { } reconnect ? ",reconnect=" + reconnect.ToString(CultureInfo.InvariantCulture) : string.Empty),
                // vectors=0: QEMU 7.2 under TCG crashes at DRIVER_OK with MSI-X + vhost-user (see QemuGuestOptions).
                "-device", $"vhost-user-blk-pci,chardev=c0,id=vblk0,num-queues={options.NumQueues.ToString(CultureInfo.InvariantCulture)},vectors={options.Vectors.ToString(CultureInfo.InvariantCulture)}{(options.PackedRing ? ",packed=on" : "")}",
            ],
        });
        return new BlockGuest(process, console, qmp);
    }

    public IReadOnlyList<string> GuestLines() =>
        LogFile.ReadLines(ConsolePath).Where(l => l.Contains("VHOSTCOMPAT: ", StringComparison.Ordinal))
            .Select(l => l[l.IndexOf("VHOSTCOMPAT: ", StringComparison.Ordinal)..]).ToList();

    public GuestBlockDevice? Device() => GuestBlockDevice.Parse(GuestLines());

    /// <summary>The guest tool's verdict line (ok/FAIL, phase, bad block count), or null.</summary>
    public Match? Verdict() => GuestLines().Select(l => VerdictLine.Match(l)).FirstOrDefault(m => m.Success);
}
