using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

namespace VhostCompat.InteropTests.Harness;

/// <summary>
/// QEMU with <c>-device vhost-user-blk-pci,chardev=c0,num-queues=1</c> (TCG, memfd share=on) booting the Debian kernel
/// with the config-change initramfs (scripts/build-initramfs-cfgchg.sh): the guest prints the disk size, waits for it
/// to change (bounded poll of /sys/block/vda/size) and prints the new size. Bounded by a hard timeout, killed by PID.
/// </summary>
public sealed class ConfigChangeGuest : QemuGuestBase
{
    public static readonly Regex InitLine = new(@"VHOSTCOMPAT: init uptime=", RegexOptions.CultureInvariant);
    public static readonly Regex WaitingLine = new(@"VHOSTCOMPAT: waiting-for-resize sectors=(?<sectors>\d+) uptime=(?<uptime>[0-9.]+)", RegexOptions.CultureInvariant);
    public static readonly Regex BeforeLine = new(@"VHOSTCOMPAT: size-before sectors=(?<sectors>\d+) status=0x(?<status>[0-9a-fA-F]+)", RegexOptions.CultureInvariant);
    public static readonly Regex AfterLine = new(@"VHOSTCOMPAT: size-after sectors=(?<sectors>\d+) polls=(?<polls>\d+) uptime=(?<uptime>[0-9.]+)", RegexOptions.CultureInvariant);
    public static readonly Regex LastSectorLine = new(@"VHOSTCOMPAT: last-sector head=(?<head>\S*)", RegexOptions.CultureInvariant);
    public static readonly Regex NewSizeDmesgLine = new(@"VHOSTCOMPAT: dmesg .*new size: (?<sectors>\d+) 512-byte logical blocks", RegexOptions.CultureInvariant);
    public static readonly Regex StatusEndLine = new(@"VHOSTCOMPAT: status_end=0x(?<status>[0-9a-fA-F]+)", RegexOptions.CultureInvariant);
    public static readonly Regex DoneLine = new(@"VHOSTCOMPAT: done uptime=(?<uptime>[0-9.]+)", RegexOptions.CultureInvariant);

    private static readonly SemaphoreSlim BuildGate = new(1, 1);

    private ConfigChangeGuest(ExternalProcess process, string consolePath, string qmpPath)
        : base(process, consolePath, qmpPath)
    {
    }

    /// <summary>Builds (once per script/kernel content) the config-change initramfs into <see cref="Initramfs.CacheDirectory"/>.</summary>
    public static Task<string> GetInitramfsAsync(InteropTools tools) =>
        InitramfsBuild.GetAsync(tools, BuildGate, "initramfs-cfgchg", "config-change guest initramfs");

    /// <param name="vectors">MSI-X vectors of the device (0: INTx, what QEMU 7.2 under TCG needs); null: QEMU's default.</param>
    public static async Task<ConfigChangeGuest> StartAsync(InteropRun run, InteropTools tools, string socketPath, int? vectors, string name = "qemu")
    {
        ArgumentNullException.ThrowIfNull(run);
        ArgumentNullException.ThrowIfNull(tools);
        var initrd = await GetInitramfsAsync(tools).ConfigureAwait(false);
        var device = "vhost-user-blk-pci,chardev=c0,id=vblk0,num-queues=1"
            + (vectors is { } v ? ",vectors=" + v.ToString(CultureInfo.InvariantCulture) : string.Empty);
        var (process, console, qmp) = StartQemu(run, tools, new Launch(name, "tcg", 1, 256, TimeSpan.FromMinutes(5), initrd, "console=ttyS0 panic=-1 quiet")
        {
            DeviceArguments = ["-chardev", "socket,id=c0,path=" + socketPath, "-device", device],
        });
        return new ConfigChangeGuest(process, console, qmp);
    }

    /// <summary>
    /// Like <see cref="QemuGuestBase.WaitForConsoleAsync"/>, polling the console every 10 ms instead of 100 ms, so the
    /// moment the line is seen measures the guest (a timing the test reports), not the poll interval.
    /// </summary>
    public async Task<(Match? Line, long Timestamp)> WaitForConsoleCloselyAsync(Regex pattern, TimeSpan timeout)
    {
        ArgumentNullException.ThrowIfNull(pattern);
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var exited = Process.HasExited;
            if (Line(pattern) is { } m)
            {
                return (m, Stopwatch.GetTimestamp());
            }

            if (exited || clock.Elapsed >= timeout)
            {
                return (null, Stopwatch.GetTimestamp());
            }

            await Task.Delay(10).ConfigureAwait(false);
        }
    }

    /// <summary>Console lines printed by the guest's /init (from the prefix "VHOSTCOMPAT: " on).</summary>
    public IReadOnlyList<string> GuestLines() =>
        LogFile.ReadLines(ConsolePath).Where(l => l.Contains("VHOSTCOMPAT: ", StringComparison.Ordinal))
            .Select(l => l[l.IndexOf("VHOSTCOMPAT: ", StringComparison.Ordinal)..]).ToList();

    /// <summary>The first guest line matching <paramref name="pattern"/> printed so far, or null.</summary>
    public Match? Line(Regex pattern)
    {
        ArgumentNullException.ThrowIfNull(pattern);
        return GuestLines().Select(l => pattern.Match(l)).FirstOrDefault(m => m.Success);
    }
}
