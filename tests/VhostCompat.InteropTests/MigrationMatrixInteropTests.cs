using System.Diagnostics;
using System.Globalization;
using VhostCompat.Compat;
using VhostCompat.InteropTests.Harness;
using VhostCompat.Virtio;
using Xunit.Abstractions;
using static VhostCompat.InteropTests.Harness.VirtioNetFeatures;
using LibCapabilities = VhostCompat.Compat.BackendCapabilities;

namespace VhostCompat.InteropTests;

/// <summary>
/// Issue 6 item 4: the migration matrix. Six source rows (build 1 unpinned, build 2 unpinned, build 2 pinned v1,
/// build 3 unpinned, build 3 pinned v1, build 3 pinned v2) × destination builds 1, 2, 3, each destination started
/// with the source's pin when its catalog has that profile and unpinned otherwise (<see cref="MatrixBackend.DestinationFor"/>).
/// For every pair <see cref="PreflightCheck"/> runs on the acked-state record of the backend the VM is on against the
/// destination build's <c>--print-capabilities</c>, then QEMU 7.2 live-migrates over QMP (return-path, high
/// max-bandwidth); the test fails on any disagreement between the verdict and QEMU's outcome.
/// One guest is booted per row: a failed migration leaves it running on the source; after a completed one it is
/// migrated back to a fresh backend of the row's own build and pin (a "return" pair, checked the same way).
/// The guest pings the switch's responder (<c>--responder 10.0.0.1</c> on every backend) once a second throughout.
/// </summary>
[Collection(QemuCollection.Name)]
[Trait("Category", "Interop")]
public sealed class MigrationMatrixInteropTests(ITestOutputHelper output)
{
    private const string ResponderIp = "10.0.0.1";

    private static readonly TimeSpan BootTimeout = TimeSpan.FromSeconds(
        int.TryParse(Environment.GetEnvironmentVariable("VHOSTCOMPAT_INTEROP_BOOT_TIMEOUT"), CultureInfo.InvariantCulture, out var s) ? s : 180);

    /// <summary>Reference harness: ~0.5-1 s for a TCG guest; generous for a loaded 2-core box.</summary>
    private static readonly TimeSpan MigrateTimeout = TimeSpan.FromSeconds(90);

    /// <summary>Ping once a second: 3 replies normally take 2-3 s.</summary>
    private static readonly TimeSpan RepliesTimeout = TimeSpan.FromSeconds(30);

    private readonly Stopwatch _clock = Stopwatch.StartNew();

    [SkippableFact]
    public Task Row_build1_unpinned() => RunRowAsync(new MatrixBackend(1, null));

    [SkippableFact]
    public Task Row_build2_unpinned() => RunRowAsync(new MatrixBackend(2, null));

    [SkippableFact]
    public Task Row_build2_pinned_v1() => RunRowAsync(new MatrixBackend(2, 1));

    [SkippableFact]
    public Task Row_build3_unpinned() => RunRowAsync(new MatrixBackend(3, null));

    [SkippableFact]
    public Task Row_build3_pinned_v1() => RunRowAsync(new MatrixBackend(3, 1));

    [SkippableFact]
    public Task Row_build3_pinned_v2() => RunRowAsync(new MatrixBackend(3, 2));

    private async Task RunRowAsync(MatrixBackend row)
    {
        var tools = InteropPrerequisites.RequireQemuGuest();
        var run = InteropRun.Create("MigrationMatrix " + row.Label);
        Log($"row {row.Label}: run directory {run.Directory}");
        var hops = new List<MatrixHop>();
        var rowProblems = new List<string>();

        // Capability documents describe a build (not a pin): one per build, read while the guest boots.
        var capsTasks = Enumerable.Range(1, 3).ToDictionary(b => b, b => MigrationQmp.PrintSampleCapabilitiesAsync(
            run, ["--build", b.ToString(CultureInfo.InvariantCulture)], $"caps-b{b}"));

        var nodes = new List<Node>();
        try
        {
            var current = await Node.StartAsync(run, tools, row, "n0", incomingPort: null);
            nodes.Add(current);
            Log($"n0: {row.Label}, backend pid {current.Backend.Process.Pid}, QEMU pid {current.Qemu.Process.Pid}");
            var status = await current.Qemu.WaitForNetStatusAsync(BootTimeout);
            if (status is null)
            {
                var why = current.Qemu.Process.HasExited ? $"QEMU exited with {current.Qemu.Process.ExitCode}" : $"nothing within {BootTimeout.TotalSeconds:F0} s";
                Assert.Fail($"the guest never printed its virtio-net status line ({why}){run.Diagnostics()}");
            }

            Log($"guest up after {status.SeenAfter.TotalSeconds:F1} s: status=0x{status.Status:x2} features {Describe(status.Features)}");
            var first = await MatrixGuest.WaitForRepliesAsync(current.Qemu, -1, 2, RepliesTimeout);
            Log($"ping replies from {ResponderIp} before any migration: seq {string.Join(",", first)}");
            if (first.Count < 2)
            {
                Assert.Fail($"the guest got {first.Count} ping replies from the responder {ResponderIp} within {RepliesTimeout.TotalSeconds:F0} s{run.Diagnostics()}");
            }

            var caps = new Dictionary<int, LibCapabilities>();
            foreach (var (b, t) in capsTasks)
            {
                caps[b] = (await t).Capabilities;
            }

            var n = 1;
            for (var build = 1; build <= 3; build++)
            {
                var to = MatrixBackend.DestinationFor(row, build);
                var (hop, arrived) = await HopAsync(run, tools, row.Label, "forward", current, to, caps[to.Build], $"n{n++}");
                hops.Add(hop);
                if (arrived is null)
                {
                    if (hop.QemuMigrated)
                    {
                        rowProblems.Add($"{hop.From.Label} -> {hop.To.Label}: the VM could not be followed after the migration; stopping the row");
                        break;
                    }

                    continue; // the VM is still on `current`
                }

                nodes.Add(arrived);
                await current.DisposeAsync();
                current = arrived;
                if (to == row)
                {
                    continue; // already on a backend of the row's own release and pin
                }

                // Back to a fresh backend of the row's own release and pin: another pair, checked the same way.
                var (back, home) = await HopAsync(run, tools, row.Label, "return", current, row, caps[row.Build], $"n{n++}");
                hops.Add(back);
                if (home is null)
                {
                    rowProblems.Add($"the VM could not be brought back from {to.Label} to {row.Label}; the rest of the row is skipped");
                    break;
                }

                nodes.Add(home);
                await current.DisposeAsync();
                current = home;
            }
        }
        finally
        {
            foreach (var node in nodes)
            {
                await node.DisposeAsync();
            }
        }

        var table = MatrixGuest.AppendToTable(hops);
        Log($"row {row.Label} done after {_clock.Elapsed.TotalSeconds:F1} s; table lines appended to {table}:");
        foreach (var h in hops)
        {
            Log("  " + h.TableLine());
        }

        var problems = rowProblems.Concat(hops.SelectMany(h => h.Problems.Select(p => $"{h.Leg} {h.From.Label} -> {h.To.Label}: {p}"))).ToList();
        if (hops.Count == 0)
        {
            problems.Add("no migration was attempted");
        }

        if (problems.Count > 0)
        {
            Assert.Fail(string.Join("\n", problems.Select(p => "* " + p)) + "\n" + run.Diagnostics());
        }
    }

    /// <summary>
    /// Preflight, then migrate the VM on <paramref name="from"/> to a new node running <paramref name="to"/>. Returns the
    /// checked hop and the new node when QEMU completed the migration (null when it did not).
    /// </summary>
    private async Task<(MatrixHop Hop, Node? Arrived)> HopAsync(InteropRun run, InteropTools tools, string row, string leg, Node from, MatrixBackend to, LibCapabilities toCaps, string name)
    {
        // The record of the backend the VM is on now (written at DRIVER_OK; for an incoming VM when it started there).
        if (!await LogFile.WaitForPathAsync(from.RecordPath, TimeSpan.FromSeconds(20), from.Backend.Process))
        {
            Assert.Fail($"{from.Name} ({from.Spec.Label}) wrote no acked-state record {from.RecordPath}{run.Diagnostics()}");
        }

        var record = from.Store.Load(from.Key)!;
        var preflight = PreflightCheck.Check(null, record, toCaps);
        var hop = new MatrixHop { Row = row, Leg = leg, From = from.Spec, To = to, Preflight = preflight };
        Log($"--- {leg}: {from.Name} {from.Spec.Label} -> {name} {to.Label}");
        Log($"record of {from.Name}: acked {Describe(record.AckedFeatures)}, profile {record.Profile?.Id ?? record.Profile?.ToString() ?? "(none)"}");
        Log("PREFLIGHT " + preflight.ToText().TrimEnd().Replace("\n", "\n  PREFLIGHT ", StringComparison.Ordinal));

        var port = MigrationQmp.FreeTcpPort();
        var dst = await Node.StartAsync(run, tools, to, name, port);
        var keep = false;
        try
        {
            var before = await MigrationQmp.VirtioNetStatusAsync(from.Qemu.QmpPath, TimeSpan.FromSeconds(10));
            var repliesBefore = MatrixGuest.Replies(from.Qemu.ConsolePath);
            hop.RepliesBefore = repliesBefore.TakeLast(3).ToList();
            var lastSeq = repliesBefore.Count > 0 ? repliesBefore[^1] : -1;

            using (var cts = new CancellationTokenSource(MigrateTimeout + TimeSpan.FromSeconds(30)))
            {
                await using (var dq = await dst.Qemu.ConnectQmpAsync(cts.Token))
                {
                    await MigrationQmp.EnableReturnPathAsync(dq, cts.Token);
                }

                await using var sq = await from.Qemu.ConnectQmpAsync(cts.Token);
                hop.Migration = await MigrationQmp.MigrateAsync(sq, $"tcp:127.0.0.1:{port.ToString(CultureInfo.InvariantCulture)}", returnPath: true, MigrateTimeout, cts.Token);
            }

            Log($"MIGRATE after ping seq {lastSeq}: {string.Join("; ", hop.Migration.Trace)} -> {hop.Migration.Status} in {hop.Migration.Elapsed.TotalSeconds:F2} s {hop.Timing}");
            hop.DestinationState = await MigrationQmp.WaitForRunStateAsync(dst.Qemu, "running", TimeSpan.FromSeconds(30));
            if (hop.DestinationState == "exited")
            {
                await dst.Qemu.Process.WaitForExitAsync(TimeSpan.FromSeconds(5));
            }

            hop.DestinationStderr = LogFile.ReadLines(dst.Qemu.StderrPath);
            foreach (var l in hop.DestinationStderr)
            {
                Log($"QEMU {name} stderr: {l}");
            }

            hop.QemuFeaturesLine = hop.DestinationStderr.FirstOrDefault(l => MigrationQmp.FeaturesUnsupportedLine.IsMatch(l));

            if (hop.QemuMigrated)
            {
                CheckCompleted(hop, dst, before);
                // The source is stopped now: its console holds the last reply the guest got there.
                var onSource = MatrixGuest.Replies(from.Qemu.ConsolePath);
                hop.RepliesBefore = onSource.TakeLast(3).ToList();
                lastSeq = onSource.Count > 0 ? onSource[^1] : lastSeq;
                hop.RepliesAfter = await MatrixGuest.WaitForRepliesAsync(dst.Qemu, lastSeq, 3, RepliesTimeout);
                Log($"ping replies on {name} after the migration: seq {string.Join(",", hop.RepliesAfter)} (lost across: {hop.LostAcross})");
                if (hop.RepliesAfter.Count < 3)
                {
                    hop.Problems.Add($"the guest got {hop.RepliesAfter.Count} ping replies on the destination within {RepliesTimeout.TotalSeconds:F0} s (3 expected): it does not keep working");
                }

                var after = await MigrationQmp.VirtioNetStatusAsync(dst.Qemu.QmpPath, TimeSpan.FromSeconds(10));
                var b = before?["guest-features"]?.ToJsonString();
                var a = after?["guest-features"]?.ToJsonString();
                if (b is not null && a == b)
                {
                    Log($"guest-features identical before and after ({before!["guest-features"]!.ToJsonString().Length} bytes of x-query-virtio-status)");
                }
                else
                {
                    hop.Problems.Add($"guest-visible features (x-query-virtio-status guest-features) differ: before {b ?? "(none)"}, after {a ?? "(none)"}");
                }

                if (!await LogFile.WaitForPathAsync(dst.RecordPath, TimeSpan.FromSeconds(20), dst.Backend.Process))
                {
                    hop.Problems.Add("the destination backend wrote no acked-state record (no DRIVER_OK from the incoming VM?)");
                }
                else if (dst.Store.Load(dst.Key) is { } dstRecord
                         && (dstRecord.AckedFeatures & ~VirtioFeatureBits.LogAll) != (record.AckedFeatures & ~VirtioFeatureBits.LogAll))
                {
                    hop.Problems.Add($"the destination backend was acked {Describe(dstRecord.AckedFeatures)}, the source backend {Describe(record.AckedFeatures)}");
                }

                keep = hop.RepliesAfter.Count > 0 && hop.DestinationState == "running";
            }
            else
            {
                await CheckFailedAsync(hop, from, dst);
                hop.RepliesAfter = await MatrixGuest.WaitForRepliesAsync(from.Qemu, lastSeq, 2, RepliesTimeout);
                Log($"ping replies on the source after the failed migration: seq {string.Join(",", hop.RepliesAfter)}");
                if (hop.RepliesAfter.Count < 2)
                {
                    hop.Problems.Add($"after the failed migration the guest got {hop.RepliesAfter.Count} ping replies on the source within {RepliesTimeout.TotalSeconds:F0} s (2 expected)");
                }
            }

            foreach (var (node, what) in new[] { (dst, "destination"), (from, "source") })
            {
                var trouble = MatrixGuest.Trouble(node.Qemu.ConsolePath);
                if (trouble.Count > 0)
                {
                    hop.Problems.Insert(0, $"GUEST KERNEL TROUBLE on the {what} ({node.Qemu.ConsolePath}):\n" + string.Join('\n', trouble));
                }

                foreach (var e in node.Backend.ErrorEntries())
                {
                    hop.Problems.Add($"{what} backend ({node.Name}) logged: {e}");
                }
            }

            var verdict = preflight.Compatible ? "compatible" : "incompatible";
            Log($"VERDICT {from.Spec.Label} -> {to.Label}: preflight {verdict}, QEMU {hop.Migration.Status}{(hop.Agrees ? string.Empty : "  ** DISAGREE **")}");
            if (!hop.Agrees)
            {
                hop.Problems.Insert(0, $"PREFLIGHT DISAGREES WITH QEMU: preflight said {verdict}, QEMU {(hop.QemuMigrated ? "migrated the VM" : "did not migrate it")} " +
                                       $"(query-migrate {hop.Migration.Status}, destination {hop.DestinationState}); record of {from.Name}: acked {Describe(record.AckedFeatures)}, " +
                                       $"profile {record.Profile?.Id ?? record.Profile?.ToString() ?? "(none)"}; destination capability {Describe(toCaps.VirtioFeatures)}\n{preflight.ToText()}");
            }

            return (hop, keep ? dst : null);
        }
        finally
        {
            if (!keep)
            {
                await dst.DisposeAsync();
            }
        }
    }

    private static void CheckCompleted(MatrixHop hop, Node dst, System.Text.Json.Nodes.JsonObject? before)
    {
        if (before is null)
        {
            hop.Problems.Add("x-query-virtio-status on the source gave no answer before the migration");
        }

        if (hop.DestinationState != "running")
        {
            hop.Problems.Add($"destination QEMU ({dst.Name}) is '{hop.DestinationState}' after a completed migration, expected 'running'");
        }
    }

    private async Task CheckFailedAsync(MatrixHop hop, Node from, Node dst)
    {
        if (hop.Migration!.Status != "failed")
        {
            hop.Problems.Add($"query-migrate ended with '{hop.Migration.Status}' (expected completed or failed): {hop.Migration.QueryMigrateJson}");
        }

        if (hop.DestinationState != "exited")
        {
            hop.Problems.Add($"destination QEMU ({dst.Name}) is '{hop.DestinationState}' after the failed load, expected it to have exited");
        }

        var srcState = await MigrationQmp.QueryStatusAsync(from.Qemu.QmpPath, TimeSpan.FromSeconds(10));
        if (srcState != "running")
        {
            hop.Problems.Add($"source QEMU is '{srcState ?? "(no answer)"}' after the failed migration, expected 'running' (return-path)");
        }

        if (hop.QemuFeaturesLine is not { } line)
        {
            hop.Problems.Add("destination QEMU stderr has no 'Features 0x... unsupported. Allowed features: 0x...' line");
            return;
        }

        // QEMU's own reason, decoded, must be exactly what the preflight's features-unsupported finding names.
        var m = MigrationQmp.FeaturesUnsupportedLine.Match(line);
        var qemuMissing = VirtioFeatures.Names(VirtioDeviceType.Net, ParseHex(m.Groups["acked"].Value) & ~ParseHex(m.Groups["allowed"].Value));
        var preflightMissing = hop.Preflight.Findings.FirstOrDefault(f => f.Code == "features-unsupported")?.Features ?? [];
        Log($"QEMU refused {string.Join(", ", qemuMissing)}; the preflight's features-unsupported named {string.Join(", ", preflightMissing)}");
        if (!qemuMissing.Order(StringComparer.Ordinal).SequenceEqual(preflightMissing.Order(StringComparer.Ordinal)))
        {
            hop.Problems.Add($"QEMU refused [{string.Join(", ", qemuMissing)}] but the preflight's features-unsupported finding named [{string.Join(", ", preflightMissing)}]");
        }
    }

    private void Log(string message) =>
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[{_clock.Elapsed.TotalSeconds,6:F1}s] {message}"));

    /// <summary>A samples/Net backend (with --state-dir and the responder) plus the QEMU that uses it.</summary>
    private sealed class Node : IAsyncDisposable
    {
        private bool _disposed;

        private Node(string name, MatrixBackend spec, SampleNetBackend backend, QemuGuest qemu, AckedStateStore store, string socket)
        {
            Name = name;
            Spec = spec;
            Backend = backend;
            Qemu = qemu;
            Store = store;
            Key = AckedStateStore.DefaultKey(socket);
        }

        public string Name { get; }

        public MatrixBackend Spec { get; }

        public SampleNetBackend Backend { get; }

        public QemuGuest Qemu { get; }

        public AckedStateStore Store { get; }

        public string Key { get; }

        public string RecordPath => Store.PathFor(Key);

        /// <summary>Starts the backend, then QEMU (booting the pinging guest, or waiting on -incoming when a port is given).</summary>
        public static async Task<Node> StartAsync(InteropRun run, InteropTools tools, MatrixBackend spec, string name, int? incomingPort)
        {
            var sock = run.PathFor(name + ".sock");
            var store = new AckedStateStore(run.PathFor("state-" + name));
            var backend = await SampleNetBackend.StartAsync(run, sock,
                [.. spec.Options, "--state-dir", store.Directory, "--responder", ResponderIp, "--log-level", "Information"], name + "-backend",
                TimeSpan.FromMinutes(10));
            try
            {
                var o = new QemuGuestOptions { SocketPath = sock, Timeout = TimeSpan.FromMinutes(10) };
                o.GuestParameters["mode"] = "loop";
                o.GuestParameters["pingloop"] = "1";
                o.GuestParameters["peer"] = ResponderIp;
                if (incomingPort is { } p)
                {
                    o.ExtraArguments.Add("-incoming");
                    o.ExtraArguments.Add($"tcp:127.0.0.1:{p.ToString(CultureInfo.InvariantCulture)}");
                }

                var qemu = await QemuGuest.StartAsync(run, tools, o, name);
                var node = new Node(name, spec, backend, qemu, store, sock);
                if (!await LogFile.WaitForPathAsync(qemu.QmpPath, TimeSpan.FromSeconds(60), qemu.Process))
                {
                    await node.DisposeAsync();
                    throw new InvalidOperationException($"QEMU {name} did not create its QMP socket {qemu.QmpPath} within 60 s{run.Diagnostics()}");
                }

                return node;
            }
            catch
            {
                await backend.DisposeAsync();
                throw;
            }
        }

        public async ValueTask DisposeAsync()
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            await Qemu.DisposeAsync();
            await Backend.StopAsync();
            await Backend.DisposeAsync();
        }
    }
}
