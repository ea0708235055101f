using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using VhostCompat.Compat;
using VhostCompat.InteropTests.Harness;
using VhostCompat.Virtio;
using Xunit.Abstractions;

namespace VhostCompat.InteropTests;

/// <summary>
/// The seed's migration (qemu-migrate.sh MISMATCH=1: source DPDK 22.11 vhost PMD with tso=1, destination with the
/// default tso=0) with each DPDK behind its own <c>vhost-compat proxy</c>. Unpinned, the proxies pass DPDK's offers
/// through: the guest acks host_tso4/6 on the source, the preflight (the source proxy's record against the destination's
/// <c>proxy --print-capabilities</c>) says incompatible, naming them, and QEMU's destination refuses the same bits while
/// the source keeps running. Pinned to a profile both DPDKs serve, the preflight says compatible and the VM migrates
/// there and back, pinging, with the guest-visible and the acked features unchanged.
/// </summary>
[Collection(QemuCollection.Name)]
[Trait("Category", "Interop")]
public sealed class ProxyMigrationInteropTests(ITestOutputHelper output)
{
    private const string Key = "vm1.net0";

    private static readonly TimeSpan GuestStatusTimeout = TimeSpan.FromSeconds(
        int.TryParse(Environment.GetEnvironmentVariable("VHOSTCOMPAT_INTEROP_BOOT_TIMEOUT"), CultureInfo.InvariantCulture, out var s) ? s : 180);

    private static readonly TimeSpan StepTimeout = TimeSpan.FromSeconds(90);

    private static readonly TimeSpan MigrateTimeout = TimeSpan.FromSeconds(90);

    private static readonly ulong HostTso = (1UL << 11) | (1UL << 12);

    private static readonly ulong HostEcn = 1UL << 13;

    private readonly Stopwatch _clock = Stopwatch.StartNew();

    [SkippableFact]
    public async Task Unpinned_proxies_tso_mismatch_preflight_says_incompatible_and_QEMU_fails_the_migration_naming_the_same_features()
    {
        var tools = InteropPrerequisites.RequireQemuGuest(QemuPeer.Qemu72);
        var testpmd = RequireDpdk2211(out var version);
        var run = InteropRun.Create(nameof(Unpinned_proxies_tso_mismatch_preflight_says_incompatible_and_QEMU_fails_the_migration_naming_the_same_features));
        Log($"run directory {run.Directory}; QEMU {tools.QemuVersion}; DPDK {version}");
        await using var a = await ProxiedDpdkHost.StartAsync(run, testpmd, "A", "tso=1", Key, pin: null);
        await using var b = await ProxiedDpdkHost.StartAsync(run, testpmd, "B", string.Empty, Key, pin: null);
        Log($"{a.Label}: {a.Proxy.Matches(ProxyProcess.Checked())[0].Value}");
        Log($"{b.Label}: {b.Proxy.Matches(ProxyProcess.Checked())[0].Value}");

        await using var src = await BootAsync(run, tools, a, "qemu-src");
        var record = await a.WaitForRecordAsync(run);
        Log($"record of host A: acked 0x{record.AckedFeatures:x} ({Names(record.AckedFeatures & HostTso)} among them), profile {record.Profile?.ToString() ?? "(none)"}");
        Assert.Equal(HostTso, record.AckedFeatures & HostTso);

        // The preflight, as an operator runs it before migrating.
        var (capsPath, caps) = await b.PrintCapabilitiesAsync(run, "B-unpinned");
        var verdict = await CompatPreflightRun.CheckAsync(run, a.RecordPath, capsPath, "A-to-B-unpinned");
        Log($"preflight A -> B: {(verdict.Compatible ? "compatible" : "incompatible")} (exit {verdict.ExitCode}); destination offers 0x{caps.VirtioFeatures:x}\n{verdict.Text.TrimEnd()}");
        Assert.False(verdict.Compatible, $"the preflight said compatible:\n{verdict.Text}");
        Assert.Equal(1, verdict.ExitCode);
        var unsupported = verdict.Errors.Single(f => f.Code == "features-unsupported");
        Assert.Equal(["host_tso4", "host_tso6"], unsupported.Features.Order(StringComparer.Ordinal));

        // QEMU's real outcome: the destination refuses the guest's features, the source keeps running.
        var port = MigrationQmp.FreeTcpPort();
        await using var dst = await StartIncomingAsync(run, tools, b, port, "qemu-dst", nthFrontend: 1);
        var lastSeq = MatrixGuest.Replies(src.ConsolePath).Max();
        var migration = await MigrateAsync(src, dst, port);
        Log($"MIGRATE A -> B after ping seq {lastSeq}: {string.Join("; ", migration.Trace)} -> {migration.Status} in {migration.Elapsed.TotalSeconds:F2} s; error-desc: {migration.ErrorDescription ?? "(none)"}");
        var dstState = await MigrationQmp.WaitForRunStateAsync(dst, "running", TimeSpan.FromSeconds(30));
        if (dstState == "exited")
        {
            await dst.Process.WaitForExitAsync(TimeSpan.FromSeconds(5));
        }

        var dstStderr = LogFile.ReadLines(dst.StderrPath);
        foreach (var l in dstStderr)
        {
            Log($"destination QEMU stderr: {l}");
        }

        Assert.Equal("failed", migration.Status);
        Assert.Equal("exited", dstState);
        var featuresLine = dstStderr.Select(l => MigrationQmp.FeaturesUnsupportedLine.Match(l)).FirstOrDefault(m => m.Success)
                           ?? throw new Xunit.Sdk.XunitException($"destination QEMU stderr has no 'Features 0x... unsupported' line: {string.Join(" | ", dstStderr)}{run.Diagnostics()}");
        var qemuMissing = VirtioFeatures.Names(VirtioDeviceType.Net, Hex(featuresLine.Groups["acked"].Value) & ~Hex(featuresLine.Groups["allowed"].Value));
        Log($"QEMU refused {string.Join(", ", qemuMissing)}; the preflight named {string.Join(", ", unsupported.Features)}");
        Assert.Equal(unsupported.Features.Order(StringComparer.Ordinal), qemuMissing.Order(StringComparer.Ordinal));

        var srcState = await MigrationQmp.QueryStatusAsync(src.QmpPath, TimeSpan.FromSeconds(10));
        Assert.Equal("running", srcState);
        var after = await MatrixGuest.WaitForRepliesAsync(src, lastSeq, 2, StepTimeout);
        Log($"source QEMU {srcState}; ping replies there after the failed migration: seq {string.Join(",", after)}");
        Assert.True(after.Count >= 2, $"the guest stopped pinging on the source after the failed migration ({src.Observed()}){run.Diagnostics()}");
        Assert.Empty(MatrixGuest.Trouble(src.ConsolePath));
    }

    [SkippableFact]
    public async Task Proxies_pinned_to_a_common_profile_preflight_says_compatible_and_the_VM_migrates_both_ways_with_identical_features()
    {
        var tools = InteropPrerequisites.RequireQemuGuest(QemuPeer.Qemu72);
        var testpmd = RequireDpdk2211(out var version);
        var run = InteropRun.Create(nameof(Proxies_pinned_to_a_common_profile_preflight_says_compatible_and_the_VM_migrates_both_ways_with_identical_features));
        Log($"run directory {run.Directory}; QEMU {tools.QemuVersion}; DPDK {version}");

        // The common profile: what both DPDKs offer (vhost-compat probe), as a value list.
        await using var dpdkA = await ProxiedDpdkHost.StartDpdkAsync(run, testpmd, "A", "tso=1");
        await using var dpdkB = await ProxiedDpdkHost.StartDpdkAsync(run, testpmd, "B", string.Empty);
        var probeA = await CompatPreflightRun.ProbeAsync(run, ProxiedDpdkHost.BackendSocketFor(run, "A"), "dpdk-A");
        var probeB = await CompatPreflightRun.ProbeAsync(run, ProxiedDpdkHost.BackendSocketFor(run, "B"), "dpdk-B");
        var pin = CommonProfile(probeA.Capabilities.VirtioFeatures, probeB.Capabilities.VirtioFeatures);
        Log($"DPDK A offers 0x{probeA.Capabilities.VirtioFeatures:x}, DPDK B 0x{probeB.Capabilities.VirtioFeatures:x}; common profile {pin}");
        Assert.Equal(0UL, pin.Features & HostTso);

        await using var a = await ProxiedDpdkHost.StartAsync(run, testpmd, "A", "tso=1", Key, pin.Canonical, dpdkA);
        await using var b = await ProxiedDpdkHost.StartAsync(run, testpmd, "B", string.Empty, Key, pin.Canonical, dpdkB);
        var seenA = a.Proxy.Matches(ProxyProcess.Checked())[0].Groups["seen"].Value;
        var seenB = b.Proxy.Matches(ProxyProcess.Checked())[0].Groups["seen"].Value;
        Log($"QEMU will see 0x{seenA} through proxy A and 0x{seenB} through proxy B");
        Assert.Equal(seenA, seenB);

        var vm = await BootAsync(run, tools, a, "qemu-1");
        var guests = new List<QemuGuest> { vm };
        try
        {
            var recordA = await a.WaitForRecordAsync(run);
            Log($"record of host A: acked 0x{recordA.AckedFeatures:x}, profile pinned {recordA.ProfilePinned}");
            Assert.Equal(0UL, recordA.AckedFeatures & HostTso);
            var acked = DpdkAcked(a.Dpdk);
            Assert.Equal(acked, recordA.AckedFeatures & ~VirtioFeatureBits.LogAll);

            // There: A -> B.
            var there = await CheckedMigrationAsync(run, tools, a, b, vm, "qemu-2", "A-to-B", acked, nthFrontend: 1);
            guests.Add(there);
            await vm.DisposeAsync();
            guests.Remove(vm);

            // Proxy A lets the next frontend in only after checking DPDK A again.
            _ = await a.Proxy.WaitForAsync(ProxyProcess.SessionEnded(), StepTimeout) ?? throw Fail(run, a, "proxy A never ended the session of the migrated-away QEMU");
            _ = await a.Proxy.WaitForAsync(ProxyProcess.Checked(), StepTimeout, nth: 2) ?? throw Fail(run, a, "proxy A never re-checked DPDK A");
            var recordB = await b.WaitForRecordAsync(run);
            Assert.Equal(recordA.AckedFeatures & ~VirtioFeatureBits.LogAll, recordB.AckedFeatures & ~VirtioFeatureBits.LogAll);

            // And back: B -> A, into a third QEMU on proxy A.
            var back = await CheckedMigrationAsync(run, tools, b, a, there, "qemu-3", "B-to-A", acked, nthFrontend: 2);
            guests.Add(back);
        }
        finally
        {
            foreach (var g in guests)
            {
                await g.DisposeAsync();
            }
        }
    }

    /// <summary>
    /// Preflight (the source proxy's record against the destination's <c>--print-capabilities</c>) must say compatible;
    /// then a QEMU waits on -incoming behind the destination proxy, the VM migrates, and it must run and ping there with
    /// the same x-query-virtio-status guest-features and the same features acked to the destination's DPDK.
    /// </summary>
    private async Task<QemuGuest> CheckedMigrationAsync(InteropRun run, InteropTools tools, ProxiedDpdkHost from, ProxiedDpdkHost to, QemuGuest vm, string name, string label,
        ulong acked, int nthFrontend)
    {
        var (capsPath, _) = await to.PrintCapabilitiesAsync(run, to.Name + "-pinned");
        var verdict = await CompatPreflightRun.CheckAsync(run, from.RecordPath, capsPath, label);
        Log($"preflight {label}: {(verdict.Compatible ? "compatible" : "incompatible")} (exit {verdict.ExitCode})\n{verdict.Text.TrimEnd()}");
        Assert.True(verdict.Compatible, $"the preflight said incompatible:\n{verdict.Text}");
        Assert.Equal(0, verdict.ExitCode);

        var port = MigrationQmp.FreeTcpPort();
        var dst = await StartIncomingAsync(run, tools, to, port, name, nthFrontend);
        var ok = false;
        try
        {
            var before = await MigrationQmp.VirtioNetStatusAsync(vm.QmpPath, TimeSpan.FromSeconds(10)) ?? throw new Xunit.Sdk.XunitException("x-query-virtio-status gave no answer on the source");
            var negotiatedBefore = to.Dpdk.Negotiated(DpdkVhostBackend.NegotiatedVirtio).Count;
            var migration = await MigrateAsync(vm, dst, port);
            Log($"MIGRATE {label}: {string.Join("; ", migration.Trace)} -> {migration.Status} in {migration.Elapsed.TotalSeconds:F2} s ({Timing(migration)}); error-desc: {migration.ErrorDescription ?? "(none)"}");
            var dstState = await MigrationQmp.WaitForRunStateAsync(dst, "running", TimeSpan.FromSeconds(30));
            Assert.True(migration.Status == "completed" && dstState == "running",
                $"migration {label} {migration.Status}, destination {dstState}: {string.Join(" | ", LogFile.ReadLines(dst.StderrPath))}{run.Diagnostics()}");

            // The source is stopped: its console holds the last reply it got.
            var lastSeq = MatrixGuest.Replies(vm.ConsolePath).DefaultIfEmpty(-1).Max();
            var replies = await MatrixGuest.WaitForRepliesAsync(dst, lastSeq, 3, StepTimeout);
            Log($"ping: last reply on the source seq {lastSeq}, on the destination seq {string.Join(",", replies)}");
            Assert.True(replies.Count >= 3, $"the guest does not ping after migration {label} ({dst.Observed()}){run.Diagnostics()}");

            var after = await MigrationQmp.VirtioNetStatusAsync(dst.QmpPath, TimeSpan.FromSeconds(10));
            var g0 = before["guest-features"]?.ToJsonString();
            var g1 = after?["guest-features"]?.ToJsonString();
            Log($"guest-features {(g0 == g1 ? "identical" : "DIFFER")}: {g0}");
            Assert.Equal(g0, g1);
            Assert.Equal(HostFeatures(before), HostFeatures(after));

            // What the destination's DPDK was acked (its newest "negotiated Virtio features") is what the source's was.
            var negotiated = to.Dpdk.Negotiated(DpdkVhostBackend.NegotiatedVirtio);
            Assert.True(negotiated.Count > negotiatedBefore, $"DPDK {to.Name} logged no SET_FEATURES for the incoming VM");
            Log($"DPDK {to.Name} acked 0x{negotiated[^1]:x}, the VM's acked features before the migration 0x{acked:x}");
            Assert.Equal(acked, negotiated[^1] & ~VirtioFeatureBits.LogAll);
            Assert.Empty(MatrixGuest.Trouble(dst.ConsolePath));
            ok = true;
            return dst;
        }
        finally
        {
            if (!ok)
            {
                await dst.DisposeAsync();
            }
        }
    }

    /// <summary>Boots the pinging guest behind <paramref name="host"/>'s proxy and waits for DRIVER_OK and 3 replies.</summary>
    private async Task<QemuGuest> BootAsync(InteropRun run, InteropTools tools, ProxiedDpdkHost host, string name)
    {
        var guest = await QemuGuest.StartAsync(run, tools, host.GuestOptions(null), name);
        try
        {
            var status = await guest.WaitForNetStatusAsync(GuestStatusTimeout) ?? throw Fail(run, host, $"the guest never printed its virtio-net status ({guest.Observed()})");
            var replies = await MatrixGuest.WaitForRepliesAsync(guest, after: -1, count: 3, StepTimeout);
            Assert.True(replies.Count >= 3, $"no ping replies through {host.Label} ({guest.Observed()}){run.Diagnostics()}");
            Log($"guest on {host.Label}: status 0x{status.Status:x2}, acked 0x{status.Features:x}; replies seq {string.Join(',', replies)}");
            return guest;
        }
        catch
        {
            await guest.DisposeAsync();
            throw;
        }
    }

    /// <summary>Starts QEMU with -incoming behind <paramref name="host"/>'s proxy; ready once QMP is up and the proxy let it in.</summary>
    private async Task<QemuGuest> StartIncomingAsync(InteropRun run, InteropTools tools, ProxiedDpdkHost host, int port, string name, int nthFrontend)
    {
        var guest = await QemuGuest.StartAsync(run, tools, host.GuestOptions(port), name);
        try
        {
            if (!await LogFile.WaitForPathAsync(guest.QmpPath, TimeSpan.FromSeconds(60), guest.Process))
            {
                throw Fail(run, host, $"the incoming QEMU {name} created no QMP socket: {string.Join(" | ", LogFile.ReadLines(guest.StderrPath))}");
            }

            _ = await host.Proxy.WaitForAsync(ProxyProcess.FrontendConnected(), StepTimeout, nthFrontend) ?? throw Fail(run, host, $"the incoming QEMU {name} never connected to the proxy");
            return guest;
        }
        catch
        {
            await guest.DisposeAsync();
            throw;
        }
    }

    /// <summary>Live migration with the return path on both sides (the source learns of a failed load and runs on).</summary>
    private static async Task<MigrationResult> MigrateAsync(QemuGuest from, QemuGuest to, int port)
    {
        using var cts = new CancellationTokenSource(MigrateTimeout + TimeSpan.FromSeconds(30));
        await using (var dq = await to.ConnectQmpAsync(cts.Token))
        {
            await MigrationQmp.EnableReturnPathAsync(dq, cts.Token);
        }

        await using var sq = await from.ConnectQmpAsync(cts.Token);
        return await MigrationQmp.MigrateAsync(sq, $"tcp:127.0.0.1:{port.ToString(CultureInfo.InvariantCulture)}", returnPath: true, MigrateTimeout, cts.Token);
    }

    /// <summary>
    /// The features both DPDKs offer, as a profile: without the vhost-only bits, and without host_ecn when neither host_tso
    /// bit remains (DPDK offers HOST_ECN even with tso=0; the virtio rules do not allow it alone in a profile).
    /// </summary>
    private static InterfaceProfile CommonProfile(ulong offerA, ulong offerB)
    {
        var common = offerA & offerB & ~(VirtioFeatureBits.LogAll | VirtioFeatureBits.ProtocolFeatures);
        if ((common & HostTso) == 0)
        {
            common &= ~HostEcn;
        }

        return new InterfaceProfile(VirtioDeviceType.Net, common, maxRingSize: 256, queues: 2);
    }

    /// <summary>The newest features DPDK logged as negotiated, without LOG_ALL (acked during a migration only).</summary>
    private static ulong DpdkAcked(DpdkVhostBackend dpdk) => dpdk.Negotiated(DpdkVhostBackend.NegotiatedVirtio)[^1] & ~VirtioFeatureBits.LogAll;

    private static string? HostFeatures(JsonObject? status) => status?["host-features"]?.ToJsonString();

    private static string Timing(MigrationResult m) =>
        JsonNode.Parse(m.QueryMigrateJson) is JsonObject o && o["total-time"] is JsonNode t
            ? string.Create(CultureInfo.InvariantCulture, $"total-time {t.GetValue<long>()} ms, downtime {o["downtime"]?.GetValue<long>()} ms")
            : "no timing";

    private static string Names(ulong features) => string.Join(",", VirtioFeatures.Names(VirtioDeviceType.Net, features));

    private static ulong Hex(string text) => ulong.Parse(text, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);

    private static Xunit.Sdk.XunitException Fail(InteropRun run, ProxiedDpdkHost host, string what) =>
        new($"{what}\n--- proxy {host.Name} log ---\n{LogFile.Tail(host.Proxy.LogPath, 6000)}{run.Diagnostics()}");

    private static string RequireDpdk2211(out string version)
    {
        var (v, problem) = PeerCheck.DpdkVersionOf(DpdkPeer.Dpdk2211);
        PeerCheck.SkipOrFail(problem);
        version = v!;
        return DpdkPeer.Dpdk2211.Testpmd!;
    }

    private void Log(string line) => output.WriteLine($"[{_clock.Elapsed.TotalSeconds,6:F1} s] {line}");
}
