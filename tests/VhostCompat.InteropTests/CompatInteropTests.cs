using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using VhostCompat.Frontend;
using VhostCompat.InteropTests.Harness;
using Xunit.Abstractions;
using static VhostCompat.InteropTests.Harness.CompatFeatures;
using static VhostCompat.InteropTests.Harness.VirtioNetFeatures;

namespace VhostCompat.InteropTests;

/// <summary>
/// Issue 4's "Done when" against real, unmodified peers: QEMU 7.2 guests see exactly the pinned profile of samples/Net;
/// a backend "upgrade" under a running guest (chardev reconnect=1) keeps the guest's interface and a "downgrade" that
/// cannot honour the acked-state record is refused with the missing bits named; <c>vhost-compat probe</c> reports what
/// DPDK 22.11's vhost PMD offers.
/// </summary>
[Collection(QemuCollection.Name)]
[Trait("Category", "Interop")]
public sealed class CompatInteropTests(ITestOutputHelper output)
{
    private static readonly TimeSpan GuestStatusTimeout = TimeSpan.FromSeconds(
        int.TryParse(Environment.GetEnvironmentVariable("VHOSTCOMPAT_INTEROP_BOOT_TIMEOUT"), CultureInfo.InvariantCulture, out var s) ? s : 180);

    /// <summary>How long a reconnected session must stay up without another connect/disconnect.</summary>
    private static readonly TimeSpan StableWindow = TimeSpan.FromSeconds(15);

    /// <summary>vhost-only bits a backend adds to any profile in GET_FEATURES: log_all 26, protocol_features 30.</summary>
    private static readonly ulong VhostOnly = Bit(VhostFLogAll) | Bit(VhostUserFProtocolFeatures);

    private readonly Stopwatch _clock = Stopwatch.StartNew();

    [SkippableFact]
    public async Task QemuGuest_sees_exactly_the_pinned_older_profile()
    {
        var tools = InteropPrerequisites.RequireQemuGuest();
        var run = InteropRun.Create(nameof(QemuGuest_sees_exactly_the_pinned_older_profile));
        Log($"run directory: {run.Directory}");
        var problems = new List<string>();

        // 1. build 3 pinned to v1: the guest must see version_1 + mrg_rxbuf and nothing else of what QEMU takes from a backend.
        var pinned = await BootOnceAsync(run, tools, "pinned", ["--build", "3", "--compat-profile", "org.vhostcompat.net.v1"], problems);
        if (pinned is { } p)
        {
            var guestView = p.GuestFeatures & Qemu72VhostUserNetBits;
            Log($"pinned v1: guest features within QEMU's vhost-user bits {Names(guestView)}; backend offered {Names(p.Offered)}, acked {Names(p.Acked)}");
            if (guestView != NetV1)
            {
                problems.Add($"pinned to org.vhostcompat.net.v1, the guest sees {Names(guestView)} of the backend-provided bits, expected exactly {Names(NetV1)}; " +
                             $"extra: {Names(guestView & ~NetV1)}, missing: {Names(NetV1 & ~guestView)}");
            }

            if ((p.GuestFeatures & Bits(28, 29)) != 0)
            {
                problems.Add($"pinned to v1, the guest acked indirect_desc/event_idx: {Names(p.GuestFeatures & Bits(28, 29))}");
            }

            // A pinned backend offers the profile's features plus the build's vhost-only bits (log_all 26, protocol_features 30).
            if ((p.Offered & ~VhostOnly) != NetV1)
            {
                problems.Add($"pinned to v1, the backend offered {Names(p.Offered)} in GET_FEATURES, expected v1 {Names(NetV1)} plus vhost-only bits");
            }
        }

        // 2. the same build unpinned offers its latest (v3): the guest does get indirect_desc and event_idx (and guest_announce).
        var latest = await BootOnceAsync(run, tools, "unpinned", ["--build", "3"], problems);
        if (latest is { } l)
        {
            var guestView = l.GuestFeatures & Qemu72VhostUserNetBits;
            // packed is off on QEMU's virtio-net-pci by default and in_order is not a bit QEMU 7.2 takes from vhost-user-net.
            var expected = NetV3 & Qemu72VhostUserNetBits & ~Bit(34);
            Log($"unpinned build 3: guest features within QEMU's vhost-user bits {Names(guestView)}; backend offered {Names(l.Offered)}, acked {Names(l.Acked)}");
            if (guestView != expected)
            {
                problems.Add($"unpinned build 3 (latest = v3): the guest sees {Names(guestView)} of the backend-provided bits, expected {Names(expected)}");
            }

            if ((l.Offered & ~VhostOnly) != NetV3)
            {
                problems.Add($"unpinned build 3 offered {Names(l.Offered)}, expected v3 {Names(NetV3)}");
            }
        }

        Log($"done after {_clock.Elapsed.TotalSeconds:F1} s");
        if (problems.Count > 0)
        {
            Assert.Fail(string.Join("\n", problems.Select(x => "* " + x)) + run.Diagnostics());
        }
    }

    [SkippableFact]
    public async Task Backend_upgrade_under_a_running_guest_keeps_the_interface_and_downgrade_is_refused()
    {
        var tools = InteropPrerequisites.RequireQemuGuest();
        var run = InteropRun.Create(nameof(Backend_upgrade_under_a_running_guest_keeps_the_interface_and_downgrade_is_refused));
        Log($"run directory: {run.Directory}");
        var socket = run.PathFor("be.sock");
        var stateDir = run.PathFor("state");
        Directory.CreateDirectory(stateDir);
        var problems = new List<string>();

        // Release 2 of the backend, recording what the guest acks.
        var v2 = await SampleNetBackend.StartAsync(run, socket, ["--build", "2", "--state-dir", stateDir], name: "backend-build2");
        await using var v2Owner = v2;
        var options = new QemuGuestOptions { SocketPath = socket, ReconnectSeconds = 1, Timeout = TimeSpan.FromMinutes(4) };
        options.GuestParameters["mode"] = "loop";
        await using var guest = await QemuGuest.StartAsync(run, tools, options);
        Log($"qemu pid {guest.Process.Pid}: {guest.Process.CommandLine}");
        var status = await guest.WaitForNetStatusAsync(GuestStatusTimeout);
        if (status is null)
        {
            Assert.Fail($"the guest never printed its virtio-net status line ({Why(guest.Process, GuestStatusTimeout)}); backend requests: {v2.RequestSequence()}{run.Diagnostics()}");
        }

        Log($"guest status 0x{status.Status:x2} after {status.SeenAfter.TotalSeconds:F1} s, features {Describe(status.Features)}");
        var acked1 = await CompatSampleLog.WaitForCountAsync(v2.LogPath, CompatSampleLog.Acked, 1, TimeSpan.FromSeconds(10), v2.Process);
        var saved1 = await CompatSampleLog.WaitForCountAsync(v2.LogPath, CompatSampleLog.Saved, 1, TimeSpan.FromSeconds(15), v2.Process);
        var firstTick = await guest.WaitForConsoleAsync(CompatSampleLog.Tick, TimeSpan.FromSeconds(20));
        var recordFile = Directory.GetFiles(stateDir, "*.json").SingleOrDefault();
        if (status.Status != 0x0f || acked1 is null || saved1 is null || recordFile is null || firstTick is null)
        {
            Assert.Fail($"setup with build 2 failed: guest status 0x{status.Status:x2} (want 0x0f), acked line {(acked1 is null ? "missing" : "ok")}, " +
                        $"record saved line {(saved1 is null ? "missing" : "ok")}, record file {recordFile ?? "missing"} (state dir: {string.Join(", ", Directory.GetFiles(stateDir))}), " +
                        $"tick line {(firstTick is null ? "missing" : "ok")}{run.Diagnostics()}");
        }

        var ackedV2 = CompatSampleLog.Hex(acked1, "acked");
        var offeredV2 = CompatSampleLog.Hex(acked1, "offered");
        var guestView = status.Features & Qemu72VhostUserNetBits;
        Log($"build 2: offered {Names(offeredV2)}, acked {Names(ackedV2)}, guest {Names(guestView)}; record {Path.GetFileName(recordFile)} saved");
        if (guestView != NetV2)
        {
            problems.Add($"build 2 (latest v2): guest sees {Names(guestView)}, expected {Names(NetV2)}");
        }

        // Upgrade: stop release 2 (SIGTERM), start release 3 on the same socket and state directory.
        var recordV2 = File.ReadAllText(recordFile);
        await v2.StopAsync();
        Log($"build 2 stopped (exit {v2.Process.ExitCode?.ToString(CultureInfo.InvariantCulture) ?? "(running)"}); {v2.PortCounters().GetValueOrDefault(0)}");
        var ticksAtSwitch = LastTick(guest);
        var v3 = await SampleNetBackend.StartAsync(run, socket, ["--build", "3", "--state-dir", stateDir], name: "backend-build3");
        await using var v3Owner = v3;
        Log($"build 3 started, pid {v3.Process.Pid}");
        var loaded = await CompatSampleLog.WaitForCountAsync(v3.LogPath, CompatSampleLog.Loaded, 1, TimeSpan.FromSeconds(10), v3.Process);
        var acked2 = await CompatSampleLog.WaitForCountAsync(v3.LogPath, CompatSampleLog.Acked, 1, TimeSpan.FromSeconds(30), v3.Process);
        var reconnectedAt = _clock.Elapsed;
        Log(acked2 is null ? "QEMU did not renegotiate with build 3 within 30 s" : $"QEMU reconnected to build 3: {acked2.Value}");
        if (loaded is null)
        {
            problems.Add("build 3 never logged 'Loaded acked-state record ...' (the record of build 2 was not re-pinned)");
        }
        else if (loaded.Groups["profile"].Value != "org.vhostcompat.net.v2")
        {
            problems.Add($"build 3 loaded the record with profile '{loaded.Groups["profile"].Value}', expected org.vhostcompat.net.v2");
        }

        if (acked2 is null)
        {
            problems.Add("QEMU (reconnect=1) never completed SET_FEATURES with build 3 within 30 s");
        }
        else
        {
            if (CompatSampleLog.Hex(acked2, "acked") != ackedV2)
            {
                problems.Add($"after the upgrade QEMU acked {Names(CompatSampleLog.Hex(acked2, "acked"))}, before {Names(ackedV2)}");
            }

            if (CompatSampleLog.Hex(acked2, "offered") != offeredV2)
            {
                problems.Add($"build 3 offered {Names(CompatSampleLog.Hex(acked2, "offered"))} after reading the record, build 2 offered {Names(offeredV2)} (the record's profile must be re-pinned)");
            }

            // No reconnect loop: exactly one session, still up, for the whole window.
            await Task.Delay(StableWindow);
            var connects = CompatSampleLog.Matches(v3.LogPath, CompatSampleLog.Connected).Count;
            var disconnects = CompatSampleLog.Matches(v3.LogPath, CompatSampleLog.Disconnected);
            Log($"{StableWindow.TotalSeconds:F0} s after the reconnect: {connects} connect(s), {disconnects.Count} disconnect(s) on build 3; requests {v3.RequestSequence()}");
            if (connects != 1 || disconnects.Count != 0)
            {
                problems.Add($"reconnect loop: build 3 saw {connects} connections and {disconnects.Count} disconnections within {StableWindow.TotalSeconds:F0} s " +
                             $"({string.Join("; ", disconnects.Select(d => d.Groups["reason"].Value))})");
            }

            // The guest keeps working: its ticks continue, it still says DRIVER_OK and transmits again.
            var tick = LastTick(guest);
            Log($"guest ticks: at the switch {ticksAtSwitch?.Value ?? "(none)"}; now {tick?.Value ?? "(none)"}");
            if (tick is null || ticksAtSwitch is null || Num(tick, "n") <= Num(ticksAtSwitch, "n"))
            {
                problems.Add("the guest's tick lines did not continue after the upgrade");
            }
            else
            {
                if (tick.Groups["status"].Value != "0f")
                {
                    problems.Add($"after the upgrade the guest's device status is 0x{tick.Groups["status"].Value}, expected 0x0f");
                }

                if (Num(tick, "tx") <= Num(ticksAtSwitch, "tx"))
                {
                    problems.Add($"the guest transmitted nothing after the upgrade (tx_packets {Num(ticksAtSwitch, "tx")} -> {Num(tick, "tx")})");
                }
            }
        }

        var qemuErrors = guest.StderrErrorLinesBeyondDisconnect();
        if (qemuErrors.Count > 0)
        {
            problems.Add("QEMU stderr has unexpected error lines after the upgrade:\n" + string.Join('\n', qemuErrors));
        }

        // Downgrade: stop release 3, start release 1 (catalog v1 only) on the same record: it must refuse, quickly, naming the bits.
        await v3.StopAsync();
        var counters = v3.PortCounters().GetValueOrDefault(0);
        Log($"build 3 stopped (exit {v3.Process.ExitCode?.ToString(CultureInfo.InvariantCulture) ?? "(running)"}); {counters?.ToString() ?? "no counters printed"}");
        if (counters is null || counters.TxPackets == 0)
        {
            problems.Add($"build 3 received no frames from the guest ({counters?.ToString() ?? "no counters printed"})");
        }

        var v3Errors = v3.ErrorEntries();
        if (v3Errors.Count > 0)
        {
            problems.Add("build 3 logged errors:\n" + string.Join('\n', v3Errors));
        }

        var recordBefore = File.ReadAllText(recordFile);
        var started = _clock.Elapsed;
        var v1 = await CompatSampleLog.RunExpectingExitAsync(run, socket, ["--build", "1", "--state-dir", stateDir], "backend-build1", TimeSpan.FromSeconds(30));
        var took = _clock.Elapsed - started;
        var stderr = v1.ReadStderr().Trim();
        Log($"build 1: exit {v1.ExitCode?.ToString(CultureInfo.InvariantCulture) ?? "(none: still running after 30 s, killed)"} after {took.TotalSeconds:F1} s; stderr: {stderr}");
        if (v1.ExitCode != 3)
        {
            problems.Add($"build 1 on a v2 record: exit code {v1.ExitCode?.ToString(CultureInfo.InvariantCulture) ?? "none (kept running)"}, expected 3 (refused)");
        }

        foreach (var name in new[] { "event_idx", "indirect_desc" })
        {
            if (!stderr.Contains(name, StringComparison.Ordinal))
            {
                problems.Add($"build 1's refusal does not name '{name}': {stderr}");
            }
        }

        if (took > TimeSpan.FromSeconds(15))
        {
            problems.Add($"build 1 took {took.TotalSeconds:F1} s to refuse (expected to fail fast)");
        }

        if (File.ReadAllText(recordFile) != recordBefore)
        {
            problems.Add("the refused downgrade changed the acked-state record");
        }

        Log($"record generations: after build 2 {Generation(recordV2)}, after build 3 {Generation(recordBefore)}");
        Log($"QEMU still running: {!guest.Process.HasExited}; QEMU stderr (line counts):\n" +
            string.Join('\n', LogFile.ReadLines(guest.StderrPath).GroupBy(l => l).Select(g => $"{g.Count(),4} x {g.Key}")));
        qemuErrors = guest.StderrErrorLinesBeyondDisconnect();
        if (qemuErrors.Count > 0)
        {
            problems.Add("QEMU stderr has unexpected error lines after the refused downgrade:\n" + string.Join('\n', qemuErrors));
        }

        if (guest.Process.HasExited)
        {
            problems.Add($"QEMU exited with {guest.Process.ExitCode} during the test");
        }

        Log($"done after {_clock.Elapsed.TotalSeconds:F1} s");
        if (problems.Count > 0)
        {
            Assert.Fail(string.Join("\n", problems.Select(x => "* " + x)) + run.Diagnostics());
        }
    }

    [SkippableFact]
    public async Task Probe_reports_DPDK_vhost_PMD_features()
    {
        var testpmd = InteropPrerequisites.RequireTestpmd();
        var run = InteropRun.Create(nameof(Probe_reports_DPDK_vhost_PMD_features));
        Log($"run directory: {run.Directory}");
        var socket = run.PathFor("dpdk.sock");
        await using var dpdk = await DpdkVhostBackend.StartAsync(run, testpmd, socket, forwardMode: "io", timeout: TimeSpan.FromMinutes(2));
        Log($"testpmd pid {dpdk.Process.Pid}: {dpdk.Process.CommandLine}");

        var probe = await CompatCli.RunAsync(run, "probe", ["probe", socket, "--json"], TimeSpan.FromSeconds(60));
        Log(probe.ToString());
        probe.ExitCode.Should().Be(0, "vhost-compat probe must succeed against DPDK\n{0}{1}", probe, run.Diagnostics());

        ulong virtio, protocol;
        string[] virtioNames, protocolNames;
        ulong? queueNum;
        int maxRing;
        using (var doc = JsonDocument.Parse(probe.Stdout))
        {
            var vc = doc.RootElement.GetProperty("vhostcompat");
            virtio = ParseHex(vc.GetProperty("virtio-features").GetString()!);
            protocol = ParseHex(vc.GetProperty("protocol-features").GetString()!);
            virtioNames = vc.GetProperty("virtio-feature-names").EnumerateArray().Select(e => e.GetString()!).ToArray();
            protocolNames = vc.GetProperty("protocol-feature-names").EnumerateArray().Select(e => e.GetString()!).ToArray();
            queueNum = vc.TryGetProperty("queue-num-reply", out var q) && q.ValueKind == JsonValueKind.Number ? q.GetUInt64() : null;
            maxRing = vc.GetProperty("max-queue-size").GetInt32();
        }

        // Cross-checks after probe has closed its connection: the SDK's frontend, and a raw client that shares no code with the SDK.
        ulong sdkVirtio, sdkProtocol, rawVirtio, rawProtocol, rawQueueNum;
        using (var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20)))
        {
            await using (var fe = await VhostUserFrontend.ConnectAsync(socket, TimeSpan.FromSeconds(5), cts.Token))
            {
                sdkVirtio = await fe.GetFeaturesAsync(cts.Token);
                sdkProtocol = (ulong)await fe.GetProtocolFeaturesAsync(cts.Token);
            }

            using var raw = await CompatRawVhostUser.ConnectAsync(socket, cts.Token);
            rawVirtio = await raw.RequestU64Async(CompatRawVhostUser.GetFeatures, cts.Token);
            rawProtocol = await raw.RequestU64Async(CompatRawVhostUser.GetProtocolFeatures, cts.Token);
            rawQueueNum = await raw.RequestU64Async(CompatRawVhostUser.GetQueueNum, cts.Token);
        }

        Log($"probe: virtio {Names(virtio)} protocol {Hex(protocol)} [{string.Join(',', protocolNames)}] queue-num {queueNum?.ToString(CultureInfo.InvariantCulture) ?? "(none)"} max ring {maxRing}");
        Log($"SDK frontend: virtio {Hex(sdkVirtio)} protocol {Hex(sdkProtocol)}; raw client: virtio {Hex(rawVirtio)} protocol {Hex(rawProtocol)} queue-num {rawQueueNum}");
        Log($"DPDK 22.11 expected: virtio {Names(Dpdk2211VhostPmd)} protocol {Hex(Dpdk2211VhostPmdProtocol)}");
        Log($"vhost-user requests seen by DPDK: {SampleNetBackend.Collapse(dpdk.Requests())}");

        var problems = new List<string>();
        if (virtio != rawVirtio || virtio != sdkVirtio)
        {
            problems.Add($"probe reports virtio features {Hex(virtio)}, the raw client got {Hex(rawVirtio)}, the SDK frontend {Hex(sdkVirtio)}");
        }

        if (virtio != Dpdk2211VhostPmd)
        {
            problems.Add($"probe reports {Names(virtio)}, DPDK 22.11's vhost PMD offers {Names(Dpdk2211VhostPmd)}; extra {Hex(virtio & ~Dpdk2211VhostPmd)}, missing {Hex(Dpdk2211VhostPmd & ~virtio)}");
        }

        var expectedVirtioNames = VhostCompat.Virtio.VirtioFeatures.Format(VhostCompat.Virtio.VirtioDeviceType.Net, virtio).Split(',');
        if (!virtioNames.SequenceEqual(expectedVirtioNames) || virtioNames.Length != System.Numerics.BitOperations.PopCount(virtio))
        {
            problems.Add($"virtio-feature-names [{string.Join(',', virtioNames)}] do not name the bits of {Hex(virtio)} one by one");
        }

        if (protocol != rawProtocol || protocol != sdkProtocol)
        {
            problems.Add($"probe reports protocol features {Hex(protocol)}, the raw client got {Hex(rawProtocol)}, the SDK frontend {Hex(sdkProtocol)}");
        }

        if (protocol != Dpdk2211VhostPmdProtocol)
        {
            problems.Add($"probe reports protocol features {Hex(protocol)}, DPDK 22.11 offers {Hex(Dpdk2211VhostPmdProtocol)}");
        }

        var expectedProtocolNames = Enumerable.Range(0, 64).Where(b => (protocol & (1UL << b)) != 0)
            .Select(b => ProtocolFeatureNames.TryGetValue(b, out var n) ? n : "bit" + b.ToString(CultureInfo.InvariantCulture)).ToArray();
        if (!protocolNames.SequenceEqual(expectedProtocolNames))
        {
            problems.Add($"protocol-feature-names [{string.Join(',', protocolNames)}], expected [{string.Join(',', expectedProtocolNames)}]");
        }

        if (protocolNames.Any(n => n.StartsWith("bit", StringComparison.Ordinal)))
        {
            problems.Add($"protocol features not decoded by name: [{string.Join(',', protocolNames)}]");
        }

        if (queueNum != rawQueueNum)
        {
            problems.Add($"probe reports GET_QUEUE_NUM {queueNum?.ToString(CultureInfo.InvariantCulture) ?? "(none)"}, the raw client got {rawQueueNum}");
        }

        if (maxRing != 32768)
        {
            problems.Add($"probe reports max ring {maxRing}; DPDK accepts 32768");
        }

        if (dpdk.Process.HasExited)
        {
            problems.Add($"testpmd exited ({dpdk.Process.ExitCode}) while being probed");
        }

        Log($"done after {_clock.Elapsed.TotalSeconds:F1} s");
        if (problems.Count > 0)
        {
            Assert.Fail(string.Join("\n", problems.Select(x => "* " + x)) + run.Diagnostics());
        }
    }

    private sealed record BootResult(ulong GuestFeatures, ulong Offered, ulong Acked);

    /// <summary>One backend + one status-mode guest (powers off after printing); null when it did not get that far (reason in problems).</summary>
    private async Task<BootResult?> BootOnceAsync(InteropRun run, InteropTools tools, string label, string[] backendArgs, List<string> problems)
    {
        // Short name: the SDK binds "<path>.<pid>.<32 hex>.tmp" first (45 more bytes), which must still fit in sun_path.
        var socket = run.PathFor(label[..1] + ".sock");
        await using var backend = await SampleNetBackend.StartAsync(run, socket, backendArgs, name: "backend-" + label);
        Log($"[{label}] backend pid {backend.Process.Pid}: {backend.Process.CommandLine}");
        GuestNetStatus? status;
        await using (var guest = await QemuGuest.StartAsync(run, tools, new QemuGuestOptions { SocketPath = socket }, name: "qemu-" + label))
        {
            status = await guest.WaitForNetStatusAsync(GuestStatusTimeout);
            if (status is null)
            {
                problems.Add($"[{label}] the guest never printed its virtio-net status line ({Why(guest.Process, GuestStatusTimeout)}); backend requests: {backend.RequestSequence()}");
                return null;
            }

            Log($"[{label}] guest status 0x{status.Status:x2} after {status.SeenAfter.TotalSeconds:F1} s, features {Describe(status.Features)}");
            if (!await guest.WaitForExitAsync(TimeSpan.FromSeconds(60)))
            {
                problems.Add($"[{label}] QEMU did not exit within 60 s after the status line (guest poweroff expected; {guest.Observed()})");
            }

            var errors = guest.StderrErrorLines();
            if (errors.Count > 0)
            {
                problems.Add($"[{label}] QEMU stderr has error lines:\n" + string.Join('\n', errors));
            }
        }

        var acked = await CompatSampleLog.WaitForCountAsync(backend.LogPath, CompatSampleLog.Acked, 1, TimeSpan.FromSeconds(5));
        await backend.StopAsync();
        if (status.Status != 0x0f)
        {
            problems.Add($"[{label}] guest virtio status 0x{status.Status:x2}, expected 0x0f");
        }

        var backendErrors = backend.ErrorEntries();
        if (backendErrors.Count > 0)
        {
            problems.Add($"[{label}] backend logged errors:\n" + string.Join('\n', backendErrors));
        }

        if (acked is null)
        {
            problems.Add($"[{label}] the backend never logged 'Frontend acked virtio features ...'; requests: {backend.RequestSequence()}");
            return null;
        }

        var result = new BootResult(status.Features, CompatSampleLog.Hex(acked, "offered"), CompatSampleLog.Hex(acked, "acked"));
        if ((result.GuestFeatures & Qemu72VhostUserNetBits) != (result.Acked & Qemu72VhostUserNetBits))
        {
            problems.Add($"[{label}] guest features {Names(result.GuestFeatures & Qemu72VhostUserNetBits)} != backend-acked {Names(result.Acked & Qemu72VhostUserNetBits)} (within QEMU's vhost-user bits)");
        }

        return result;
    }

    private static System.Text.RegularExpressions.Match? LastTick(QemuGuest guest) =>
        CompatSampleLog.Matches(guest.ConsolePath, CompatSampleLog.Tick) is { Count: > 0 } ticks ? ticks[^1] : null;

    private static long Num(System.Text.RegularExpressions.Match m, string group) => long.Parse(m.Groups[group].Value, CultureInfo.InvariantCulture);

    private static string Generation(string recordJson)
    {
        try
        {
            using var doc = JsonDocument.Parse(recordJson);
            return doc.RootElement.GetProperty("payload").GetProperty("generation").ToString();
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            return "?";
        }
    }

    private static string Why(ExternalProcess p, TimeSpan timeout) =>
        p.HasExited ? $"QEMU exited with {p.ExitCode} after {p.Elapsed.TotalSeconds:F1} s" : $"nothing within {timeout.TotalSeconds:F0} s";

    private void Log(string line) => output.WriteLine($"[{_clock.Elapsed.TotalSeconds,6:F1} s] {line}");
}
