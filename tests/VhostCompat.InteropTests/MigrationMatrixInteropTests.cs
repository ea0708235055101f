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
    private const string ResponderIp = MatrixNode.ResponderIp;

    private static readonly TimeSpan BootTimeout = TimeSpan.FromSeconds(
        int.TryParse(Environment.GetEnvironmentVariable("VHOSTCOMPAT_INTEROP_BOOT_TIMEOUT"), CultureInfo.InvariantCulture, out var s) ? s : 180);

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
        var frontend = new MatrixFrontend(InteropPrerequisites.RequireQemuGuest(), "q35");
        var run = InteropRun.Create("MigrationMatrix " + row.Label);
        Log($"row {row.Label}: run directory {run.Directory}");
        var hops = new List<MatrixHop>();
        var rowProblems = new List<string>();

        // Capability documents describe a build (not a pin): one per build, read while the guest boots.
        var capsTasks = Enumerable.Range(1, 3).ToDictionary(b => b, b => MigrationQmp.PrintSampleCapabilitiesAsync(
            run, ["--build", b.ToString(CultureInfo.InvariantCulture)], $"caps-b{b}"));

        var nodes = new List<MatrixNode>();
        try
        {
            var current = await MatrixNode.StartAsync(run, frontend, row, "n0", incomingPort: null);
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
                var (hop, arrived) = await HopAsync(run, frontend, row.Label, "forward", current, to, caps[to.Build], $"n{n++}");
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
                var (back, home) = await HopAsync(run, frontend, row.Label, "return", current, row, caps[row.Build], $"n{n++}");
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
    private async Task<(MatrixHop Hop, MatrixNode? Arrived)> HopAsync(InteropRun run, MatrixFrontend frontend, string row, string leg, MatrixNode from, MatrixBackend to, LibCapabilities toCaps, string name)
    {
        // The record of the backend the VM is on now (written at DRIVER_OK; for an incoming VM when it started there).
        var record = await from.WaitForRecordAsync(run);
        var preflight = PreflightCheck.Check(null, record, toCaps);
        var hop = new MatrixHop { Row = row, Leg = leg, From = from.Spec, To = to, Preflight = preflight, Record = record, DestinationCapabilities = toCaps };
        Log($"--- {leg}: {from.Name} {from.Spec.Label} -> {name} {to.Label}");
        Log($"record of {from.Name}: acked {Describe(record.AckedFeatures)}, profile {record.Profile?.Id ?? record.Profile?.ToString() ?? "(none)"}");
        Log("PREFLIGHT " + preflight.ToText().TrimEnd().Replace("\n", "\n  PREFLIGHT ", StringComparison.Ordinal));
        var arrived = await new MatrixMigrator(Log).MigrateAsync(hop, from, port => MatrixNode.StartAsync(run, frontend, to, name, port));
        return (hop, arrived);
    }

    private void Log(string message) =>
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[{_clock.Elapsed.TotalSeconds,6:F1}s] {message}"));
}
