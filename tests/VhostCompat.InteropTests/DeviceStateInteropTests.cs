using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using VhostCompat.Compat;
using VhostCompat.InteropTests.Harness;
using Xunit.Abstractions;

namespace VhostCompat.InteropTests;

/// <summary>
/// Issue 16 item 3, device state with a real frontend: QEMU 10.0 acks DEVICE_STATE and, migrating a vhost-user-net device
/// between two QEMU 10.0 instances, has the source backend save its state (SET_DEVICE_STATE_FD direction save, then
/// CHECK_DEVICE_STATE) and the destination backend load it, inside the migration stream. samples/Net carries the MACs
/// its switch learned on the port and the port's counters. One test migrates and finds the guest's MAC in the
/// destination's table from the loaded state before the guest can send there; two make the destination refuse the
/// blob (a build with another state format; a byte flipped in transfer) and QEMU must fail the migration with the VM
/// still running, and pinging, on the source. QEMU 7.2 never sends these requests (docs/device-state.md).
/// </summary>
[Collection(QemuCollection.Name)]
[Trait("Category", "Interop")]
public sealed class DeviceStateInteropTests(ITestOutputHelper output)
{
    private const string Machine = "pc-q35-7.2";

    /// <summary>The guest's MAC (<see cref="QemuGuestOptions.Mac"/>, the default of every matrix node).</summary>
    private const string GuestMac = "52:54:00:12:34:56";

    private static readonly TimeSpan BootTimeout = TimeSpan.FromSeconds(
        int.TryParse(Environment.GetEnvironmentVariable("VHOSTCOMPAT_INTEROP_BOOT_TIMEOUT"), CultureInfo.InvariantCulture, out var s) ? s : 180);

    private static readonly Regex SavedLine = new(
        @"port 0: saved device state v(?<version>\d+): (?<count>\d+) MAC\(s\) \((?<macs>[^)]*)\), counters (?<counters>tx_packets=\d+ tx_bytes=\d+ rx_packets=\d+ rx_dropped=\d+); (?<bytes>\d+) bytes",
        RegexOptions.CultureInvariant);

    private static readonly Regex LoadedLine = new(
        @"port 0: loaded device state v(?<version>\d+): (?<count>\d+) MAC\(s\) \((?<macs>[^)]*)\), counters (?<counters>tx_packets=\d+ tx_bytes=\d+ rx_packets=\d+ rx_dropped=\d+); the port's table now: (?<table>.*)$",
        RegexOptions.CultureInvariant);

    /// <summary>The SDK's line per transfer: the whole blob (envelope + the device's payload + SHA-256).</summary>
    private static readonly Regex TransferLine = new(
        @"Device state (?<direction>saved|loaded): (?<bytes>\d+) bytes \(device state version (?<version>\d+)\) in (?<ms>[0-9.]+) ms",
        RegexOptions.CultureInvariant);

    private static readonly Regex Counters = new(
        @"tx_packets=(?<txp>\d+) tx_bytes=(?<txb>\d+) rx_packets=(?<rxp>\d+) rx_dropped=(?<rxd>\d+)", RegexOptions.CultureInvariant);

    /// <summary>
    /// QEMU 10.0.2's words on the destination when CHECK_DEVICE_STATE fails during the load (measured; two spaces after
    /// "loading" are QEMU's). The device paths are those of the harness's -device virtio-net-pci,id=net0 at 00:01.0.
    /// </summary>
    private static readonly string[] DestinationRefusal =
    [
        "qemu-system-x86_64: Error loading  back-end state of virtio-net device /machine/peripheral/net0/virtio-backend: Back-end failed to process its internal state",
        "qemu-system-x86_64: Failed to load virtio-net-device/backend:backend",
        "qemu-system-x86_64: Failed to load virtio-net:virtio",
        "qemu-system-x86_64: error while loading state for instance 0x0 of device '0000:00:01.0/virtio-net'",
        "qemu-system-x86_64: load of migration failed: Input/output error",
    ];

    /// <summary>The source's words for it, learnt over the return path: its stderr line and query-migrate's error-desc.</summary>
    private const string SourceRefusal = "qemu-system-x86_64: Sibling indicated error 1";

    private const string SourceErrorDescription = "Sibling indicated error 1";

    private readonly Stopwatch _clock = Stopwatch.StartNew();

    [SkippableFact]
    public async Task Qemu10_to_Qemu10_carries_the_learned_MACs_and_counters_to_the_destination()
    {
        var (run, frontend) = Prepare(nameof(Qemu10_to_Qemu10_carries_the_learned_MACs_and_counters_to_the_destination));
        var to = new MatrixBackend(3, null);
        await using var src = await StartSourceAsync(run, frontend);
        var hop = await PreflightAsync(run, src, to, frontend);
        var requestsBefore = src.Backend.Requests().Count;
        var srcLinesBefore = LogFile.ReadLines(src.Backend.LogPath).Count;

        await using var dst = await new MatrixMigrator(Log).MigrateAsync(hop, src, port => MatrixNode.StartAsync(run, frontend, to, "n1", port, backendLogLevel: "Debug"));
        FailOn(run, hop);
        dst.Should().NotBeNull("QEMU completed the migration and the guest answers there");

        // The order QEMU 10.0 sends the requests in, on each side, around the transfer.
        var srcRequests = src.Backend.Requests().Skip(requestsBefore).ToList();
        var dstRequests = dst!.Backend.Requests();
        Log($"source requests during the migration: {SampleNetBackend.Collapse(srcRequests)}");
        Log($"destination requests from its connection: {SampleNetBackend.Collapse(dstRequests)}");
        var srcAt = TransferAt(srcRequests, "source");
        var dstAt = TransferAt(dstRequests, "destination");
        srcRequests.Take(srcAt).Should().Contain("GET_VRING_BASE", "the source saves after its rings were stopped");
        dstRequests.Take(dstAt).Should().NotContain("SET_VRING_KICK", "the destination loads before any ring runs");

        // What was saved is what was loaded, and the guest's MAC is in the destination's table before it can send there.
        var srcLines = LogFile.ReadLines(src.Backend.LogPath).Skip(srcLinesBefore).ToList();
        var dstLines = LogFile.ReadLines(dst.Backend.LogPath);
        var saved = Single(srcLines, SavedLine, "source");
        var (loadedAt, loaded) = SingleAt(dstLines, LoadedLine, "destination");
        Log($"source:      {saved.Value}");
        Log($"destination: {loaded.Value}");
        saved.Groups["version"].Value.Should().Be("1");
        saved.Groups["macs"].Value.Split(' ').Should().Contain(GuestMac, "the switch learned the guest's MAC from its pings");
        loaded.Groups["macs"].Value.Should().Be(saved.Groups["macs"].Value);
        loaded.Groups["table"].Value.Split(' ').Should().Contain(GuestMac);
        loaded.Groups["counters"].Value.Should().Be(saved.Groups["counters"].Value, "the counters are the source's");
        var firstTx = dstLines.ToList().FindIndex(l => l.Contains("Queue 1 started", StringComparison.Ordinal));
        firstTx.Should().BeGreaterThan(loadedAt, "the guest's TX queue starts only after the state is in");
        dstLines.Take(loadedAt).Should().NotContain(l => l.Contains("request SEND_RARP", StringComparison.Ordinal), "no announcement taught the MAC first");

        // Blob sizes: the SDK's envelope (20-byte header + SHA-256) around the device's payload.
        var srcTransfer = Single(srcLines, TransferLine, "source");
        var dstTransfer = Single(dstLines, TransferLine, "destination");
        var payload = int.Parse(saved.Groups["bytes"].Value, CultureInfo.InvariantCulture);
        var count = int.Parse(saved.Groups["count"].Value, CultureInfo.InvariantCulture);
        payload.Should().Be(2 + (6 * count) + 32);
        srcTransfer.Groups["direction"].Value.Should().Be("saved");
        dstTransfer.Groups["direction"].Value.Should().Be("loaded");
        srcTransfer.Groups["bytes"].Value.Should().Be((20 + payload + 32).ToString(CultureInfo.InvariantCulture));
        dstTransfer.Groups["bytes"].Value.Should().Be(srcTransfer.Groups["bytes"].Value);
        Log($"blob: {srcTransfer.Groups["bytes"].Value} bytes ({payload}-byte payload, {count} MAC(s)); saved in {srcTransfer.Groups["ms"].Value} ms, " +
            $"loaded {dstTransfer.Groups["ms"].Value} ms after SET_DEVICE_STATE_FD; {hop.Timing}");

        // The counters continue: the guest's pings on the destination are counted on top of the source's.
        var before = ParseCounters(saved.Groups["counters"].Value);
        before.TxPackets.Should().BeGreaterThanOrEqualTo(2, "the guest pinged on the source");
        await dst.DisposeAsync();
        var after = dst.Backend.PortCounters().GetValueOrDefault(0);
        after.Should().NotBeNull($"the destination backend prints its counters on exit{run.Diagnostics()}");
        Log($"destination counters on exit: {after}; after the load: {loaded.Groups["counters"].Value}");
        after!.TxPackets.Should().BeGreaterThanOrEqualTo(before.TxPackets + hop.RepliesAfter.Count, "one echo request per reply seen on the destination, on top of the loaded count");
        after.RxPackets.Should().BeGreaterThanOrEqualTo(before.RxPackets + hop.RepliesAfter.Count);
        LogStderr(src, dst);
    }

    [SkippableFact]
    public async Task A_destination_with_another_state_format_refuses_the_blob_and_QEMU_keeps_the_VM_on_the_source()
    {
        var (run, frontend) = Prepare(nameof(A_destination_with_another_state_format_refuses_the_blob_and_QEMU_keeps_the_VM_on_the_source));
        var to = new MatrixBackend(3, null) { StateVersion = 2 };
        await using var src = await StartSourceAsync(run, frontend);
        var hop = await PreflightAsync(run, src, to, frontend, "the device refused state version 1 (it writes version 2)");
        MatrixNode? dst = null;
        var arrived = await new MatrixMigrator(Log).MigrateAsync(hop, src, async port =>
            dst = await MatrixNode.StartAsync(run, frontend, to, "n1", port, backendLogLevel: "Debug"));
        FailOn(run, hop);
        arrived.Should().BeNull();
        LogFile.ReadLines(dst!.Backend.LogPath).Should().Contain(l => l.Contains("port 0: refused device state v1: this build reads only version 2", StringComparison.Ordinal));
        AssertQemuRefusedTheState(hop, src, dst);
    }

    [SkippableFact]
    public async Task A_blob_corrupted_in_transfer_fails_the_SDK_checksum_and_QEMU_keeps_the_VM_on_the_source()
    {
        var (run, frontend) = Prepare(nameof(A_blob_corrupted_in_transfer_fails_the_SDK_checksum_and_QEMU_keeps_the_VM_on_the_source));
        var to = new MatrixBackend(3, null);
        await using var src = await StartSourceAsync(run, frontend);
        var hop = await PreflightAsync(run, src, to, frontend, "device state checksum mismatch (corrupted in transfer)");
        MatrixNode? dst = null;
        MigrationRelay? relay = null;
        try
        {
            var arrived = await new MatrixMigrator(Log).MigrateAsync(hop, src, async port =>
            {
                // The source sends to the relay on the migrator's port; the destination QEMU listens behind it.
                var incoming = MigrationQmp.FreeTcpPort();
                dst = await MatrixNode.StartAsync(run, frontend, to, "n1", incoming, backendLogLevel: "Debug");
                relay = MigrationRelay.Start(port, incoming);
                return dst;
            });
            Log($"relay: {relay?.ForwardedBytes} bytes source -> destination, flipped {relay?.Flipped}");
            FailOn(run, hop);
            arrived.Should().BeNull();
            relay!.Flipped.Should().NotBeNull("the relay found the VCDS envelope in the migration stream");
        }
        finally
        {
            if (relay is not null)
            {
                await relay.DisposeAsync();
            }
        }

        AssertQemuRefusedTheState(hop, src, dst!);
    }

    private (InteropRun Run, MatrixFrontend Frontend) Prepare(string test)
    {
        var tools = InteropPrerequisites.RequireQemuGuest(QemuPeer.Qemu100);
        var run = InteropRun.Create("DeviceState " + test);
        Log($"run directory {run.Directory}; {tools.QemuPeer!.Name} = {tools.Qemu} ({tools.QemuVersion}), machine {Machine}");
        return (run, new MatrixFrontend(tools, Machine));
    }

    /// <summary>n0: build 3 on QEMU 10.0, the guest pinging the responder (so the switch has learned its MAC).</summary>
    private async Task<MatrixNode> StartSourceAsync(InteropRun run, MatrixFrontend frontend)
    {
        var src = await MatrixNode.StartAsync(run, frontend, new MatrixBackend(3, null), "n0", incomingPort: null, backendLogLevel: "Debug");
        var status = await src.Qemu.WaitForNetStatusAsync(BootTimeout);
        if (status is null)
        {
            await src.DisposeAsync();
            Assert.Fail($"the guest on {frontend.Label} never printed its virtio-net status line{run.Diagnostics()}");
        }

        var first = await MatrixGuest.WaitForRepliesAsync(src.Qemu, -1, 2, TimeSpan.FromSeconds(30));
        Log($"guest up on n0 after {status.SeenAfter.TotalSeconds:F1} s; ping replies seq {string.Join(",", first)}");
        if (first.Count < 2)
        {
            await src.DisposeAsync();
            Assert.Fail($"the guest got {first.Count} ping replies from {MatrixNode.ResponderIp} before the migration{run.Diagnostics()}");
        }

        return src;
    }

    /// <summary>The SDK's preflight on the source's record against the destination release's capability document.</summary>
    private async Task<MatrixHop> PreflightAsync(InteropRun run, MatrixNode from, MatrixBackend to, MatrixFrontend frontend, string? refusal = null)
    {
        var record = await from.WaitForRecordAsync(run);
        var (caps, _) = await MigrationQmp.PrintSampleCapabilitiesAsync(run, to.Options, "caps-" + to.Short.Replace('/', '-'));
        var preflight = PreflightCheck.Check(null, record, caps);
        Log($"--- n0 {from.Spec.Label} -> n1 {to.Label}; PREFLIGHT {preflight.ToText().TrimEnd().Replace("\n", "\n  PREFLIGHT ", StringComparison.Ordinal)}");

        // The record carries the source's device-state format and the capability document the formats the destination
        // loads: a foreign format is refused before the migration (device-state-version); a blob corrupted in transfer
        // cannot be foreseen and is left to the SDK's checksum.
        record.DeviceStateVersion.Should().Be(1u, "the source build writes format 1 and DEVICE_STATE was acked");
        if (to.StateVersion is { } foreign && foreign != 1)
        {
            preflight.Findings.Should().ContainSingle(f => f.Severity == PreflightSeverity.Error).Which.Code.Should().Be("device-state-version");
        }
        else
        {
            preflight.Compatible.Should().BeTrue("the destination offers everything the VM was acked");
        }
        return new MatrixHop
        {
            Row = "device-state", Leg = "forward", From = from.Spec, To = to, Preflight = preflight, Record = record, DestinationCapabilities = caps,
            FromFrontend = frontend, ToFrontend = frontend, ExpectedStateRefusal = refusal,
        };
    }

    private static void FailOn(InteropRun run, MatrixHop hop)
    {
        if (hop.Problems.Count > 0)
        {
            Assert.Fail(string.Join("\n", hop.Problems.Select(p => "* " + p)) + "\n" + run.Diagnostics());
        }
    }

    /// <summary>The index of SET_DEVICE_STATE_FD, which must occur once and be followed at once by CHECK_DEVICE_STATE.</summary>
    private int TransferAt(IReadOnlyList<string> requests, string side)
    {
        var list = requests.ToList();
        list.Count(r => r == "SET_DEVICE_STATE_FD").Should().Be(1, $"the {side} backend transfers its state once");
        list.Count(r => r == "CHECK_DEVICE_STATE").Should().Be(1);
        var at = list.IndexOf("SET_DEVICE_STATE_FD");
        list.ElementAtOrDefault(at + 1).Should().Be("CHECK_DEVICE_STATE", $"on the {side} CHECK_DEVICE_STATE follows SET_DEVICE_STATE_FD");
        Log($"{side} around the transfer: ... {string.Join(' ', list.Skip(Math.Max(0, at - 6)).Take(at - Math.Max(0, at - 6)))} [SET_DEVICE_STATE_FD CHECK_DEVICE_STATE] {string.Join(' ', list.Skip(at + 2).Take(6))} ...");
        return at;
    }

    private static Match Single(IReadOnlyList<string> lines, Regex pattern, string side) => SingleAt(lines, pattern, side).Match;

    private static (int Index, Match Match) SingleAt(IReadOnlyList<string> lines, Regex pattern, string side)
    {
        var hits = lines.Select((l, i) => (i, m: pattern.Match(l))).Where(x => x.m.Success).ToList();
        hits.Should().ContainSingle($"the {side} backend logs one '{pattern}' line");
        return hits[0];
    }

    private static SwitchPortCounters ParseCounters(string text)
    {
        var m = Counters.Match(text);
        return new SwitchPortCounters(0, long.Parse(m.Groups["txp"].Value, CultureInfo.InvariantCulture), long.Parse(m.Groups["txb"].Value, CultureInfo.InvariantCulture),
            long.Parse(m.Groups["rxp"].Value, CultureInfo.InvariantCulture), long.Parse(m.Groups["rxd"].Value, CultureInfo.InvariantCulture));
    }

    /// <summary>QEMU's exact words on both sides, and the source's view of the failure (query-migrate).</summary>
    private void AssertQemuRefusedTheState(MatrixHop hop, MatrixNode src, MatrixNode dst)
    {
        Log($"query-migrate error-desc: {hop.Migration?.ErrorDescription ?? "(none)"}; {string.Join("; ", hop.Migration?.Trace ?? [])}");
        Log($"destination backend: {hop.BackendStateRefusal}");
        LogStderr(src, dst);
        LogFile.ReadLines(dst.Qemu.StderrPath).Should().Equal(DestinationRefusal);
        LogFile.ReadLines(src.Qemu.StderrPath).Should().Contain(SourceRefusal);
        hop.Migration!.ErrorDescription.Should().Be(SourceErrorDescription);
    }

    private void LogStderr(MatrixNode src, MatrixNode dst)
    {
        foreach (var (node, side) in new[] { (src, "source"), (dst, "destination") })
        {
            foreach (var l in LogFile.ReadLines(node.Qemu.StderrPath))
            {
                Log($"QEMU {side} stderr: {l}");
            }
        }
    }

    private void Log(string message) =>
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[{_clock.Elapsed.TotalSeconds,6:F1}s] {message}"));
}
