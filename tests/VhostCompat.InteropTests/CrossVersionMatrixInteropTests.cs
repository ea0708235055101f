using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using VhostCompat.Compat;
using VhostCompat.InteropTests.Harness;
using Xunit.Abstractions;
using static VhostCompat.InteropTests.Harness.VirtioNetFeatures;

namespace VhostCompat.InteropTests;

/// <summary>
/// Issue 16 item 4: live migration between real hypervisor versions (Debian 12's QEMU 7.2 and bookworm-backports'
/// QEMU 10.0) × backend releases (samples/Net builds 1 and 3) × pinned/unpinned, with the preflight run by the
/// <c>vhost-compat</c> tool as an operator would: <c>frontend --qmp</c> on the running VM adds its QEMU version and
/// machine type to the backend's acked-state record, <c>frontend --qemu</c> adds the destination binary's version
/// and machine types to the destination build's capability document, and <c>check --json</c> gives the verdict,
/// which must be QEMU's real outcome.
/// Rows on <c>pc-q35-7.2</c> (both QEMUs have it) walk 7.2→10, 10→10, 10→7.2 and 7.2→7.2 against builds 1 and 3;
/// rows on QEMU 10.0's own <c>pc-q35-10.0</c> try 7.2 (which has no such machine: it refuses to start) and 10.0.
/// The backends log at Debug, so each hop also counts SET_DEVICE_STATE_FD / CHECK_DEVICE_STATE (issue 16 item 3).
/// </summary>
[Collection(QemuCollection.Name)]
[Trait("Category", "Interop")]
public sealed class CrossVersionMatrixInteropTests(ITestOutputHelper output)
{
    private const string OldMachine = "pc-q35-7.2";
    private const string NewMachine = "pc-q35-10.0";

    private static readonly TimeSpan BootTimeout = TimeSpan.FromSeconds(
        int.TryParse(Environment.GetEnvironmentVariable("VHOSTCOMPAT_INTEROP_BOOT_TIMEOUT"), CultureInfo.InvariantCulture, out var s) ? s : 180);

    private static readonly TimeSpan CliTimeout = TimeSpan.FromSeconds(60);

    private readonly Stopwatch _clock = Stopwatch.StartNew();

    private enum Qemu
    {
        V72,
        V100,
    }

    /// <summary>
    /// The hops of a <c>pc-q35-7.2</c> row (the VM starts on QEMU 7.2): destination QEMU and build. A failed hop leaves
    /// the VM where it is, so the order makes every row cover 7.2→7.2, 7.2→10, 10→10 and 10→7.2.
    /// </summary>
    private static readonly (Qemu Qemu, int Build)[] OldMachineWalk =
        [(Qemu.V72, 1), (Qemu.V72, 3), (Qemu.V100, 1), (Qemu.V100, 3), (Qemu.V100, 1), (Qemu.V100, 3), (Qemu.V72, 1), (Qemu.V72, 3)];

    /// <summary>The hops of a <c>pc-q35-10.0</c> row (the VM starts on QEMU 10.0).</summary>
    private static readonly (Qemu Qemu, int Build)[] NewMachineWalk = [(Qemu.V72, 3), (Qemu.V100, 1), (Qemu.V100, 3), (Qemu.V72, 1)];

    [SkippableFact]
    public Task Machine_pc_q35_7_2_build3_unpinned() => RunRowAsync(new MatrixBackend(3, null), OldMachine, Qemu.V72, OldMachineWalk);

    [SkippableFact]
    public Task Machine_pc_q35_7_2_build3_pinned_v1() => RunRowAsync(new MatrixBackend(3, 1), OldMachine, Qemu.V72, OldMachineWalk);

    /// <summary>Pinned to catalog v1's values plus <c>device_state=off</c>: what keeps a VM loadable by QEMU 7.2.</summary>
    [SkippableFact]
    public Task Machine_pc_q35_7_2_build3_pinned_v1_without_device_state() =>
        RunRowAsync(new MatrixBackend(3, 1, PinLabel: "v1+device_state=off"), OldMachine, Qemu.V72, OldMachineWalk);

    [SkippableFact]
    public Task Machine_pc_q35_10_0_build3_unpinned() => RunRowAsync(new MatrixBackend(3, null), NewMachine, Qemu.V100, NewMachineWalk);

    [SkippableFact]
    public Task Machine_pc_q35_10_0_build3_pinned_v1() => RunRowAsync(new MatrixBackend(3, 1), NewMachine, Qemu.V100, NewMachineWalk);

    private async Task RunRowAsync(MatrixBackend row, string machine, Qemu start, IReadOnlyList<(Qemu Qemu, int Build)> walk)
    {
        var tools = new Dictionary<Qemu, InteropTools>
        {
            [Qemu.V72] = InteropPrerequisites.RequireQemuGuest(QemuPeer.Qemu72),
            [Qemu.V100] = InteropPrerequisites.RequireQemuGuest(QemuPeer.Qemu100),
        };
        var run = InteropRun.Create($"CrossVersionMatrix {machine} {row.Label}");

        // Destination documents: each build's capability document with each QEMU binary's frontend side, by the tool.
        var builds = walk.Select(w => w.Build).Append(row.Build).Distinct().ToList();
        var capsTasks = builds.ToDictionary(b => b, b => MigrationQmp.PrintSampleCapabilitiesAsync(run, ["--build", b.ToString(CultureInfo.InvariantCulture)], $"caps-b{b}"));
        if (row.PinLabel is not null)
        {
            // The catalog version's values, as the build publishes them, plus device_state=off.
            var catalog = (await capsTasks[row.Build]).Capabilities.Catalog!;
            var id = "org.vhostcompat.net.v" + row.PinnedVersion!.Value.ToString(CultureInfo.InvariantCulture);
            row = row with { PinValues = (catalog.Find(id) ?? throw new InvalidOperationException($"build {row.Build} publishes no {id}")).Canonical + ",device_state=off" };
        }

        var rowLabel = $"{machine} {row.Label}";
        Log($"row {rowLabel}: run directory {run.Directory}; {string.Join(", ", tools.Values.Select(t => $"{t.QemuPeer!.Name} = {t.Qemu} ({t.QemuVersion})"))}");
        var hops = new List<MatrixHop>();
        var problems = new List<string>();
        var nodes = new List<MatrixNode>();
        try
        {
            var current = await MatrixNode.StartAsync(run, new MatrixFrontend(tools[start], machine), row, "n0", incomingPort: null, backendLogLevel: "Debug");
            nodes.Add(current);
            var status = await current.Qemu.WaitForNetStatusAsync(BootTimeout);
            if (status is null)
            {
                Assert.Fail($"the guest on {current.Frontend.Label} never printed its virtio-net status line{run.Diagnostics()}");
            }

            Log($"guest up on {current.Frontend.Label} after {status.SeenAfter.TotalSeconds:F1} s: features {Describe(status.Features)}");
            var first = await MatrixGuest.WaitForRepliesAsync(current.Qemu, -1, 2, TimeSpan.FromSeconds(30));
            if (first.Count < 2)
            {
                Assert.Fail($"the guest got {first.Count} ping replies from {MatrixNode.ResponderIp} before any migration{run.Diagnostics()}");
            }

            var destinationDocs = new Dictionary<(Qemu, int), string>();
            foreach (var (q, b) in walk.Distinct())
            {
                await capsTasks[b];
                destinationDocs[(q, b)] = await WithFrontendAsync(run, $"caps-b{b}-{q}", ["--qemu", tools[q].Qemu, "--caps", run.PathFor($"caps-b{b}.json")]);
            }

            var migrator = new MatrixMigrator(Log);
            var n = 1;
            foreach (var (q, build) in walk)
            {
                var to = MatrixBackend.DestinationFor(row, build);
                var toFrontend = new MatrixFrontend(tools[q], machine);
                var name = $"n{n++}";
                var hop = await PreflightAsync(run, rowLabel, current, to, toFrontend, destinationDocs[(q, build)], name, problems);
                hops.Add(hop);
                var requestsBefore = current.Backend.Requests().Count;
                MatrixNode? dst = null;
                var arrived = await migrator.MigrateAsync(hop, current, async port =>
                    dst = await MatrixNode.StartAsync(run, toFrontend, to, name, port, backendLogLevel: "Debug"));
                hop.DeviceStateRequests = CountDeviceState(current.Backend.Requests().Skip(requestsBefore)) + (dst is null ? 0 : CountDeviceState(dst.Backend.Requests()));
                Log($"device-state requests (SET_DEVICE_STATE_FD, CHECK_DEVICE_STATE) on both backends during the hop: {hop.DeviceStateRequests}");
                if (arrived is null)
                {
                    if (hop.QemuMigrated)
                    {
                        problems.Add($"{hop.FromLabel} -> {hop.ToLabel}: the VM could not be followed after the migration; stopping the row");
                        break;
                    }

                    continue;
                }

                nodes.Add(arrived);
                await current.DisposeAsync();
                current = arrived;
            }
        }
        finally
        {
            foreach (var node in nodes)
            {
                await node.DisposeAsync();
            }
        }

        var table = MatrixGuest.AppendToTable(hops, "cross-version-matrix", "QEMU outcome");
        Log($"row {rowLabel} done after {_clock.Elapsed.TotalSeconds:F1} s; table lines appended to {table}:");
        foreach (var h in hops)
        {
            Log("  " + h.TableLine());
        }

        problems.AddRange(hops.SelectMany(h => h.Problems.Select(p => $"{h.FromLabel} -> {h.ToLabel}: {p}")));
        if (hops.Count < walk.Count)
        {
            problems.Add($"{hops.Count} of {walk.Count} migrations were attempted");
        }

        if (problems.Count > 0)
        {
            Assert.Fail(string.Join("\n", problems.Select(p => "* " + p)) + "\n" + run.Diagnostics());
        }
    }

    /// <summary>
    /// The operator's preflight with the tool: the VM's record with its frontend (<c>frontend --qmp</c>), then
    /// <c>check --record --caps --json</c>. The SDK's own <see cref="PreflightCheck"/> on the same two files must give
    /// the same verdict and error codes (it is the hop's <see cref="MatrixHop.Preflight"/>).
    /// </summary>
    private async Task<MatrixHop> PreflightAsync(InteropRun run, string row, MatrixNode from, MatrixBackend to, MatrixFrontend toFrontend, string destinationDoc, string name, List<string> problems)
    {
        await from.WaitForRecordAsync(run);
        var vmRecord = await WithFrontendAsync(run, $"{name}-vm-record", ["--qmp", from.Qemu.QmpPath, "--record", from.RecordPath]);
        var record = AckedStateRecord.Parse(File.ReadAllBytes(vmRecord), vmRecord);
        var caps = CapabilityDocument.Load(destinationDoc);
        var preflight = PreflightCheck.Check(null, record, caps);
        var hop = new MatrixHop
        {
            Row = row, Leg = "forward", From = from.Spec, To = to, Preflight = preflight, Record = record, DestinationCapabilities = caps,
            FromFrontend = from.Frontend, ToFrontend = toFrontend,
        };
        Log($"--- {from.Name} {hop.FromLabel} -> {name} {hop.ToLabel}");
        Log($"record of {from.Name}: acked {Describe(record.AckedFeatures)}, profile {record.Profile?.Id ?? "(none)"}, frontend {record.Frontend}; destination frontend {caps.Frontend}");

        var check = await CompatCli.RunAsync(run, $"{name}-check", ["check", "--record", vmRecord, "--caps", destinationDoc, "--json"], CliTimeout);
        Log("vhost-compat check: exit " + check.ExitCode?.ToString(CultureInfo.InvariantCulture) + " " + check.Stdout.Trim().Replace("\n", " ", StringComparison.Ordinal));
        var json = check.ExitCode is 0 or 1 ? JsonNode.Parse(check.Stdout) as JsonObject : null;
        var cliCompatible = json?["compatible"]?.GetValue<bool>();
        var cliErrors = (json?["findings"] as JsonArray ?? []).OfType<JsonObject>()
            .Where(f => f["severity"]?.GetValue<string>() == "error").Select(f => f["code"]!.GetValue<string>()).Order(StringComparer.Ordinal).ToList();
        var libErrors = preflight.Findings.Where(f => f.Severity == PreflightSeverity.Error).Select(f => f.Code).Order(StringComparer.Ordinal).ToList();
        if (cliCompatible != preflight.Compatible || check.ExitCode != (preflight.Compatible ? 0 : 1) || !cliErrors.SequenceEqual(libErrors))
        {
            problems.Add($"{hop.FromLabel} -> {hop.ToLabel}: vhost-compat check said compatible={cliCompatible?.ToString() ?? "(no answer)"} [{string.Join(", ", cliErrors)}], " +
                         $"the SDK's PreflightCheck {preflight.Compatible} [{string.Join(", ", libErrors)}]\n{check}");
        }

        return hop;
    }

    /// <summary><c>vhost-compat frontend ARGS</c>; its output (the document with the frontend embedded) goes to NAME.json.</summary>
    private static async Task<string> WithFrontendAsync(InteropRun run, string name, IEnumerable<string> args)
    {
        var r = await CompatCli.RunAsync(run, name, ["frontend", .. args], CliTimeout);
        if (r.ExitCode != 0)
        {
            Assert.Fail($"vhost-compat frontend failed: {r}");
        }

        var file = run.PathFor(name + ".json");
        await File.WriteAllTextAsync(file, r.Stdout);
        return file;
    }

    private static int CountDeviceState(IEnumerable<string> requests) =>
        requests.Count(r => r.Contains("DEVICE_STATE", StringComparison.Ordinal));

    private void Log(string message) =>
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[{_clock.Elapsed.TotalSeconds,6:F1}s] {message}"));
}
