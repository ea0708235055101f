using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using VhostCompat.Compat;
using VhostCompat.InteropTests.Harness;
using VhostCompat.Virtio;
using Xunit.Abstractions;

namespace VhostCompat.InteropTests;

/// <summary>
/// qemu-storage-daemon 7.2 (QEMU's libvhost-user backend, not built on the SDK) behind <c>vhost-compat proxy --type block</c>:
/// a QEMU 7.2 guest with vhost-user-blk-pci runs the block workload through the proxy (pattern written, fdatasync'd,
/// read back in the guest and checked in the image on the host). Transparent, the record the proxy writes equals what
/// QEMU acked, and QEMU shows discard and write-zeroes (x-query-virtio-status); pinned to qsd's own offer minus discard
/// and write_zeroes, the same workload passes and QEMU shows neither, in the guest features nor in the host features.
/// </summary>
[Collection(QemuCollection.Name)]
[Trait("Category", "Interop")]
public sealed class ProxyStorageDaemonInteropTests(ITestOutputHelper output)
{
    private const long DiskSize = 64L << 20;
    private const int Queues = 2;
    private const string StateKey = "vm1.blk0";
    private const ulong Discard = 1UL << 13;
    private const ulong WriteZeroes = 1UL << 14;

    private static readonly TimeSpan GuestTimeout = TimeSpan.FromSeconds(
        int.TryParse(Environment.GetEnvironmentVariable("VHOSTCOMPAT_INTEROP_BOOT_TIMEOUT"), CultureInfo.InvariantCulture, out var s) ? s : 240);

    private static readonly TimeSpan StepTimeout = TimeSpan.FromSeconds(90);

    private static readonly Regex HoldLine = new(@"VHOSTCOMPAT: hold seconds=", RegexOptions.CultureInvariant);

    private readonly Stopwatch _clock = Stopwatch.StartNew();

    [SkippableFact]
    public async Task Guest_block_workload_passes_through_a_transparent_proxy_to_qsd_and_the_record_is_what_QEMU_acked()
    {
        var r = await RunAsync(nameof(Guest_block_workload_passes_through_a_transparent_proxy_to_qsd_and_the_record_is_what_QEMU_acked), pin: false);

        // The proxy adds nothing: QEMU sees qsd's offer; discard and write-zeroes are offered, acked by Linux, visible.
        Assert.Equal(r.Offer, r.Seen);
        Assert.Equal(Discard | WriteZeroes, r.Qemu.HostFeatures & (Discard | WriteZeroes));
        Assert.Equal(Discard | WriteZeroes, r.Qemu.GuestFeatures & (Discard | WriteZeroes));
        Assert.True(r.GuestDevice.HasFeature(13) && r.GuestDevice.HasFeature(14), $"Linux's features {r.GuestDevice.FeatureBits} lack discard (13) or write_zeroes (14)");

        // The record holds what QEMU acked: the guest's features (the vhost-user subset) plus PROTOCOL_FEATURES.
        Assert.Equal(r.Qemu.GuestFeatures, r.Record.AckedFeatures & ~VirtioFeatures.VhostOnlyMask);
        Assert.NotEqual(0UL, r.Record.AckedFeatures & VirtioFeatureBits.ProtocolFeatures);
        Assert.False(r.Record.ProfilePinned, "a transparent proxy recorded an explicit pin");
    }

    [SkippableFact]
    public async Task Guest_block_workload_passes_through_the_proxy_pinned_without_discard_and_write_zeroes_and_QEMU_shows_neither()
    {
        var r = await RunAsync(nameof(Guest_block_workload_passes_through_the_proxy_pinned_without_discard_and_write_zeroes_and_QEMU_shows_neither), pin: true);

        // qsd offers both; the proxy hides them; QEMU (whose discard=on/write-zeroes=on defaults only allow the bits) and
        // the guest see neither.
        Assert.Equal(Discard | WriteZeroes, r.Offer & (Discard | WriteZeroes));
        Assert.Equal(0UL, r.Seen & (Discard | WriteZeroes));
        Assert.Equal(r.Offer & ~(Discard | WriteZeroes), r.Seen);
        Assert.Equal(0UL, r.Qemu.HostFeatures & (Discard | WriteZeroes));
        Assert.Equal(0UL, r.Qemu.GuestFeatures & (Discard | WriteZeroes));
        Assert.False(r.GuestDevice.HasFeature(13) || r.GuestDevice.HasFeature(14), $"Linux's features {r.GuestDevice.FeatureBits} have discard (13) or write_zeroes (14)");

        Assert.Equal(r.Qemu.GuestFeatures, r.Record.AckedFeatures & ~VirtioFeatures.VhostOnlyMask);
        Assert.True(r.Record.ProfilePinned, "the pinned proxy's record does not say the profile was pinned");
        Assert.Equal(r.Profile, r.Record.Profile);
    }

    private async Task<Observed> RunAsync(string name, bool pin)
    {
        var tools = InteropPrerequisites.RequireQemuGuest(QemuPeer.Qemu72);
        BlockGuest.RequireCompiler();
        var qsdVersion = StorageDaemon.Require();
        var run = InteropRun.Create(name);
        Log($"run directory {run.Directory}; QEMU {tools.QemuVersion}; qemu-storage-daemon {qsdVersion}");
        await BlockGuest.GetInitramfsAsync(tools);
        Log("initramfs ready");

        var image = run.PathFor("disk.img");
        StorageDaemon.CreateImage(image, DiskSize);
        var stateDir = run.PathFor("state");
        var frontendSocket = run.PathFor("vm1-blk0.sock");
        await using var qsd = await StorageDaemon.StartAsync(run, image, run.PathFor("qsd.sock"), Queues);
        Log($"qsd pid {qsd.Process.Pid}: {qsd.Process.CommandLine}");

        // What qsd offers, from the same probe an operator runs; the pinned profile is that offer minus discard and write_zeroes.
        InterfaceProfile? profile = null;
        var args = new List<string> { "--listen", frontendSocket, "--backend", qsd.SocketPath, "--type", "block", "--state-dir", stateDir, "--state-key", StateKey };
        if (pin)
        {
            var probe = await CompatCli.RunAsync(run, "probe", ["probe", "--type", "block", "--json", qsd.SocketPath], StepTimeout);
            Assert.True(probe.ExitCode == 0, $"vhost-compat probe of qsd failed: {probe}{run.Diagnostics()}");
            profile = ProfileWithout(probe.Stdout, ["discard", "write_zeroes"]);
            Log($"qsd probed in {probe.Elapsed.TotalSeconds:F1} s; pinned profile: {profile.Canonical}");
            args.AddRange(["--compat-profile", profile.Canonical]);
        }

        await using var proxy = ProxyProcess.Start(run, "proxy", args);
        var checkedLine = await proxy.WaitForAsync(ProxyProcess.Checked(), StepTimeout) ?? throw Fail(run, proxy, "the proxy never checked qsd");
        var offer = ulong.Parse(checkedLine.Groups["offer"].Value, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);
        var seen = ulong.Parse(checkedLine.Groups["seen"].Value, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);
        Log($"proxy checked qsd: offer {VirtioDeviceStatus.Describe(VirtioDeviceType.Block, offer)}, QEMU will see {VirtioDeviceStatus.Describe(VirtioDeviceType.Block, seen)}");
        Assert.True(await LogFile.WaitForPathAsync(frontendSocket, StepTimeout, proxy.Process), $"the proxy does not listen on {frontendSocket}{run.Diagnostics()}");

        // The guest: write the pattern, fdatasync, read it back; then it holds (vhostcompat.hold, an upper bound never
        // waited out) so that QMP can be asked what the device negotiated while it is still up (a poweroff resets it).
        var tag = Guid.NewGuid().ToString("N")[..10];
        var offsets = BlockPattern.OffsetsFor(DiskSize);
        var options = new BlockGuestOptions
        {
            SocketPath = frontendSocket, Mode = "write", Tag = tag, Offsets = offsets, NumQueues = Queues,
            Timeout = GuestTimeout + TimeSpan.FromMinutes(1),
        };
        options.GuestParameters["hold"] = "600";
        await using var guest = await BlockGuest.StartAsync(run, tools, options, "qemu");
        Log($"qemu pid {guest.Process.Pid}: {guest.Process.CommandLine}");
        var init = await guest.WaitForConsoleAsync(BlockGuest.InitLine, GuestTimeout);
        Assert.True(init is not null, $"the guest never reached /init (stuck in SeaBIOS's virtio-blk probe?) ({guest.Observed()}){Tails(proxy)}{run.Diagnostics()}");
        var toInit = guest.Process.Elapsed;
        Log($"guest reached /init ({toInit.TotalSeconds:F1} s after QEMU started)");
        var hold = await guest.WaitForConsoleAsync(HoldLine, GuestTimeout);
        Assert.True(hold is not null, $"the guest never finished its workload ({guest.Observed()}){Tails(proxy)}{run.Diagnostics()}");
        var done = await guest.WaitForConsoleAsync(BlockGuest.DoneLine, TimeSpan.Zero);
        var toDone = guest.Process.Elapsed;
        Log($"guest done at guest uptime {done?.Groups["uptime"].Value} s ({toDone.TotalSeconds:F1} s after QEMU started), holding");

        VirtioDeviceStatus qemu;
        using (var cts = new CancellationTokenSource(StepTimeout))
        {
            await using var qmp = await guest.ConnectQmpAsync(cts.Token);
            qemu = await VirtioDeviceStatus.QueryAsync(qmp, "virtio-blk", VirtioDeviceType.Block, cts.Token);
            await File.WriteAllTextAsync(run.PathFor("x-query-virtio-status.json"), qemu.Raw.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }), cts.Token);
            run.AddArtifact("x-query-virtio-status (guest holding after its workload)", run.PathFor("x-query-virtio-status.json"));
        }

        Log($"x-query-virtio-status {qemu.Path}: status [{string.Join(", ", qemu.Statuses.Select(x => x.Split(':')[0]))}]");
        Assert.Contains(qemu.Statuses, x => x.StartsWith("VIRTIO_CONFIG_S_DRIVER_OK", StringComparison.Ordinal));
        Log($"  guest-features {VirtioDeviceStatus.Describe(VirtioDeviceType.Block, qemu.GuestFeatures)}");
        Log($"  host-features  {VirtioDeviceStatus.Describe(VirtioDeviceType.Block, qemu.HostFeatures)}");
        Log($"  vhost-dev features {VirtioDeviceStatus.Describe(VirtioDeviceType.Block, qemu.VhostFeatures)}, acked-features {VirtioDeviceStatus.Describe(VirtioDeviceType.Block, qemu.VhostAckedFeatures)}");
        // QEMU's vhost device got exactly the offer the proxy announced (pinned or not).
        Assert.Equal(VirtioDeviceStatus.Describe(VirtioDeviceType.Block, seen), VirtioDeviceStatus.Describe(VirtioDeviceType.Block, qemu.VhostFeatures));
        await guest.DisposeAsync();  // QMP quit
        Assert.True(guest.Process.ExitCode == 0, $"QEMU exited with {guest.Process.ExitCode} on quit; stderr: {string.Join(" | ", guest.StderrErrorLines())}");
        Assert.Empty(guest.StderrErrorLines());

        // The guest's own verdict, its view of the device, and the image on the host.
        var lines = guest.GuestLines();
        foreach (var l in lines)
        {
            output.WriteLine("  guest| " + l);
        }

        var verdict = guest.Verdict();
        Assert.True(verdict is { } v && v.Groups["verdict"].Value == "ok" && v.Groups["phase"].Value == "write", $"guest verdict: {verdict?.Value ?? "(none)"}{run.Diagnostics()}");
        var device = guest.Device();
        Assert.True(device is not null, $"the guest printed no blkdev line{run.Diagnostics()}");
        Assert.Equal(0x0f, device!.Status);
        Assert.Equal(DiskSize / 512, device.SizeSectors);
        Assert.Equal(Queues, device.HardwareQueues);
        // What Linux says it acked (sysfs) is what QEMU holds as the guest's features.
        Assert.Equal(VirtioDeviceStatus.Describe(VirtioDeviceType.Block, GuestFeatureMask(device)), VirtioDeviceStatus.Describe(VirtioDeviceType.Block, qemu.GuestFeatures));
        var hostBad = BlockPattern.Mismatches(image, tag, offsets);
        Assert.True(hostBad.Count == 0, "the image on the host does not hold the pattern: " + string.Join("; ", hostBad) + run.Diagnostics());
        Log("guest verdict ok, host image holds the pattern");

        var record = new AckedStateStore(stateDir).Load(StateKey) ?? throw Fail(run, proxy, "the proxy wrote no acked-state record");
        Log($"record: acked {VirtioDeviceStatus.Describe(VirtioDeviceType.Block, record.AckedFeatures)}, protocol 0x{record.AckedProtocolFeatures:x}, pinned {record.ProfilePinned}, profile {record.Profile?.Canonical ?? "(none)"}");
        // The record holds QEMU's SET_FEATURES: vhost-dev acked-features plus PROTOCOL_FEATURES.
        Assert.Equal(VirtioDeviceStatus.Describe(VirtioDeviceType.Block, qemu.VhostAckedFeatures),
            VirtioDeviceStatus.Describe(VirtioDeviceType.Block, record.AckedFeatures & ~VirtioFeatureBits.ProtocolFeatures));
        Assert.True(proxy.Matches(ProxyProcess.Refused()).Count == 0, $"the proxy refused qsd{Tails(proxy)}");
        Log($"total {_clock.Elapsed.TotalSeconds:F1} s");
        return new Observed(offer, seen, qemu, device, record, profile);
    }

    /// <summary>The probe's offer (capability document JSON) as a block value list without <paramref name="without"/>.</summary>
    internal static InterfaceProfile ProfileWithout(string probeJson, IReadOnlyCollection<string> without)
    {
        var doc = JsonNode.Parse(probeJson)?["vhostcompat"] ?? throw new InvalidOperationException("probe printed no vhostcompat object: " + probeJson);
        var names = (doc["virtio-feature-names"] as JsonArray ?? []).Select(n => n!.GetValue<string>())
            .Where(n => VirtioFeatures.Find(VirtioDeviceType.Block, n) is { IsVhostOnly: false } && !without.Contains(n));
        var values = new List<string> { "type=block" };
        values.AddRange(names.Select(n => n + "=on"));
        values.Add("queues=" + doc["queues"]!.GetValue<int>().ToString(CultureInfo.InvariantCulture));
        values.Add("max_ring=" + doc["max-queue-size"]!.GetValue<int>().ToString(CultureInfo.InvariantCulture));
        return InterfaceProfile.Parse(string.Join(',', values), VirtioDeviceType.Block);
    }

    private static ulong GuestFeatureMask(GuestBlockDevice device)
    {
        ulong mask = 0;
        for (int bit = 0; bit < Math.Min(64, device.FeatureBits.Length); bit++)
        {
            mask |= device.HasFeature(bit) ? 1UL << bit : 0;
        }

        return mask;
    }

    private static string Tails(ProxyProcess proxy) => $"\n--- proxy log ---\n{LogFile.Tail(proxy.LogPath, 4000)}";

    private static Xunit.Sdk.XunitException Fail(InteropRun run, ProxyProcess proxy, string what) =>
        new($"{what}{Tails(proxy)}{run.Diagnostics()}");

    private void Log(string line) => output.WriteLine($"[{_clock.Elapsed.TotalSeconds,6:F1} s] {line}");

    private sealed record Observed(ulong Offer, ulong Seen, VirtioDeviceStatus Qemu, GuestBlockDevice GuestDevice, AckedStateRecord Record, InterfaceProfile? Profile);
}
