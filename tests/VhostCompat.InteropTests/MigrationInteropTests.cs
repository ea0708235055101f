using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using VhostCompat.Compat;
using VhostCompat.InteropTests.Harness;
using VhostCompat.Virtio;
using Xunit.Abstractions;
using static VhostCompat.InteropTests.Harness.VirtioNetFeatures;
using LibCapabilities = VhostCompat.Compat.BackendCapabilities;

namespace VhostCompat.InteropTests;

/// <summary>
/// Issue 6 item 4, first slice: live migration of a QEMU 7.2 guest between two QEMU processes on this machine, each with
/// its own samples/Net backend process (the source with --state-dir, so its acked-state record exists), migration over
/// QMP with return-path. Before migrating, <see cref="PreflightCheck"/> is run on the source's acked-state record against
/// the destination's <c>--print-capabilities</c>; every test fails when its verdict disagrees with what QEMU then does.
/// </summary>
[Collection(QemuCollection.Name)]
[Trait("Category", "Interop")]
public sealed class MigrationInteropTests(ITestOutputHelper output)
{
    private static readonly TimeSpan GuestStatusTimeout = TimeSpan.FromSeconds(
        int.TryParse(Environment.GetEnvironmentVariable("VHOSTCOMPAT_INTEROP_BOOT_TIMEOUT"), CultureInfo.InvariantCulture, out var s) ? s : 180);

    /// <summary>Reference harness: ~0.5-1 s for a 256 MiB TCG guest; generous for a loaded box.</summary>
    private static readonly TimeSpan MigrateTimeout = TimeSpan.FromSeconds(90);

    private readonly Stopwatch _clock = Stopwatch.StartNew();

    [SkippableFact]
    public async Task Migration_between_same_versions_succeeds_and_preflight_agrees()
    {
        var r = await RunAsync(nameof(Migration_between_same_versions_succeeds_and_preflight_agrees), ["--build", "3"], ["--build", "3"]);
        if (!r.Preflight.Compatible)
        {
            r.Problems.Add("preflight says incompatible for build 3 -> build 3:\n" + r.Preflight.ToText());
        }

        ExpectMigrated(r);
        Finish(r);
    }

    [SkippableFact]
    public async Task Newer_unpinned_source_to_older_destination_fails_in_QEMU_and_preflight_predicted_it()
    {
        var r = await RunAsync(nameof(Newer_unpinned_source_to_older_destination_fails_in_QEMU_and_preflight_predicted_it), ["--build", "3"], ["--build", "2"]);
        if (r.Preflight.Compatible)
        {
            r.Problems.Add("preflight says compatible for unpinned build 3 -> build 2:\n" + r.Preflight.ToText());
        }

        var named = r.Preflight.Findings.Where(f => f.Severity == PreflightSeverity.Error)
            .SelectMany(f => f.Features).Distinct(StringComparer.Ordinal).ToList();
        if (!named.Contains("guest_announce", StringComparer.Ordinal))
        {
            r.Problems.Add($"preflight does not name guest_announce among the missing features (named: {string.Join(", ", named)}):\n{r.Preflight.ToText()}");
        }

        if ((r.GuestFeatures & Bit(21)) == 0)
        {
            r.Problems.Add($"unpinned build 3: the guest did not ack guest_announce (bit 21): {Describe(r.GuestFeatures)} - the scenario does not exercise the mismatch");
        }

        if (r.Migration.Status != "failed")
        {
            r.Problems.Add($"source query-migrate ended with '{r.Migration.Status}', expected 'failed' (return-path enabled): {r.Migration.QueryMigrateJson}");
        }

        if (r.DestinationState != "exited")
        {
            r.Problems.Add($"destination QEMU is '{r.DestinationState}' after the failed load, expected it to have exited");
        }

        if (r.QemuFeaturesLine is not { } line)
        {
            r.Problems.Add("destination QEMU stderr has no 'Features 0x... unsupported. Allowed features: 0x...' line");
        }
        else
        {
            // QEMU's own reason, decoded: the bits the guest acked that the destination device does not allow. They must be
            // exactly what the preflight's features-unsupported finding names.
            var m = MigrationQmp.FeaturesUnsupportedLine.Match(line);
            var acked = ParseHex(m.Groups["acked"].Value);
            var allowed = ParseHex(m.Groups["allowed"].Value);
            var qemuMissing = VirtioFeatures.Names(VirtioDeviceType.Net, acked & ~allowed);
            var preflightMissing = r.Preflight.Findings.FirstOrDefault(f => f.Code == "features-unsupported")?.Features ?? [];
            Log($"QEMU refused {string.Join(", ", qemuMissing)}; the preflight's features-unsupported named {string.Join(", ", preflightMissing)}");
            if (!qemuMissing.Order(StringComparer.Ordinal).SequenceEqual(preflightMissing.Order(StringComparer.Ordinal)))
            {
                r.Problems.Add($"QEMU refused [{string.Join(", ", qemuMissing)}] but the preflight's features-unsupported finding named [{string.Join(", ", preflightMissing)}]");
            }
        }

        if (r.SourceStateAfter != "running")
        {
            r.Problems.Add($"source QEMU is '{r.SourceStateAfter}' after the failed migration, expected 'running' (return-path)");
        }

        if (r.SourceTicksAfter.Count < 2)
        {
            r.Problems.Add($"the guest did not keep running on the source after the failed migration: {r.SourceTicksAfter.Count} new tick(s) in 30 s");
        }

        Finish(r);
    }

    [SkippableFact]
    public async Task Newer_source_pinned_to_the_older_profile_migrates()
    {
        var r = await RunAsync(nameof(Newer_source_pinned_to_the_older_profile_migrates),
            ["--build", "3", "--compat-profile", "org.vhostcompat.net.v2"], ["--build", "2"]);
        if (!r.Preflight.Compatible)
        {
            r.Problems.Add("preflight says incompatible for build 3 pinned to v2 -> build 2:\n" + r.Preflight.ToText());
        }

        if ((r.GuestFeatures & Bit(21)) != 0)
        {
            r.Problems.Add($"pinned to org.vhostcompat.net.v2, the guest still acked guest_announce: {Describe(r.GuestFeatures)}");
        }

        ExpectMigrated(r);
        Finish(r);
    }

    private void ExpectMigrated(ScenarioResult r)
    {
        if (r.Migration.Status != "completed")
        {
            r.Problems.Add($"source query-migrate ended with '{r.Migration.Status}', expected 'completed': {r.Migration.QueryMigrateJson}");
        }

        if (r.DestinationState != "running")
        {
            r.Problems.Add($"destination QEMU is '{r.DestinationState}' after the migration, expected 'running'");
        }

        if (r.DestinationTicks.Count < 3)
        {
            r.Problems.Add($"the guest did not keep running on the destination: {r.DestinationTicks.Count} new tick(s) within 30 s (3 expected)");
        }
        else if (r.DestinationTicks[^1].Status != 0x0f)
        {
            r.Problems.Add($"on the destination the guest's virtio status is 0x{r.DestinationTicks[^1].Status:x2}, expected 0x0f");
        }

        if (r.DestinationTicks.Count >= 2 && r.DestinationTicks[^1].TxPackets <= r.DestinationTicks[0].TxPackets)
        {
            r.Problems.Add($"the guest's tx_packets did not grow on the destination ({r.DestinationTicks[0]} -> {r.DestinationTicks[^1]}): the data path is not running there");
        }

        var before = r.GuestFeaturesBefore?.ToJsonString();
        var after = r.GuestFeaturesAfter?.ToJsonString();
        if (before is null || after is null || before != after)
        {
            r.Problems.Add($"guest-visible features (x-query-virtio-status guest-features) differ: source before {before ?? "(none)"}, destination after {after ?? "(none)"}");
        }

        if (r.RamDiff is not { } diff)
        {
            r.Problems.Add("guest RAM of the stopped source and the loaded destination could not be compared (see the output)");
        }
        else if (diff.Count > 0)
        {
            r.Problems.Add($"guest RAM differs between the stopped source and the loaded (not yet resumed) destination in {diff.Count} page(s), first at " +
                           string.Join(' ', diff.First.Select(a => "0x" + a.ToString("x", CultureInfo.InvariantCulture))) +
                           ": writes that never reached the destination (for the vhost-user device: not marked in the dirty log)");
        }

        if (r.DestinationRecord is null)
        {
            r.Problems.Add("the destination backend wrote no acked-state record (no DRIVER_OK from the incoming VM?)");
        }
        else if ((r.DestinationRecord.AckedFeatures & ~VirtioFeatureBits.LogAll) != (r.SourceRecord.AckedFeatures & ~VirtioFeatureBits.LogAll))
        {
            r.Problems.Add($"the destination backend was acked {Describe(r.DestinationRecord.AckedFeatures)}, the source backend {Describe(r.SourceRecord.AckedFeatures)}");
        }

        foreach (var (name, errors) in r.BackendErrors)
        {
            if (errors.Count > 0)
            {
                r.Problems.Add($"{name} backend logged errors:\n" + string.Join('\n', errors));
            }
        }
    }

    private void Finish(ScenarioResult r)
    {
        // The point of the preflight: its verdict must match what QEMU really did. With return-path the source reports
        // 'completed' only when the destination loaded the device state, 'failed' when it refused it.
        var qemuMigrated = r.Migration.Status == "completed";
        Log($"VERDICT preflight={(r.Preflight.Compatible ? "compatible" : "incompatible")} QEMU={(qemuMigrated ? "migrated" : "refused")} (query-migrate {r.Migration.Status}, destination {r.DestinationState}, {r.DestinationTicks.Count} guest ticks there)");
        if (r.Preflight.Compatible != qemuMigrated)
        {
            r.Problems.Insert(0, $"PREFLIGHT DISAGREES WITH QEMU: preflight said {(r.Preflight.Compatible ? "compatible" : "incompatible")}, QEMU {(qemuMigrated ? "migrated the VM" : "did not migrate it")} " +
                                 $"(query-migrate {r.Migration.Status}, destination {r.DestinationState})\n{r.Preflight.ToText()}");
        }

        if (r.DestinationOops.Count > 0)
        {
            r.Problems.Insert(0, "the guest kernel crashed on the destination after the migration:\n" + string.Join('\n', r.DestinationOops));
        }

        if (r.Problems.Count > 0)
        {
            Assert.Fail(string.Join("\n", r.Problems.Select(p => "* " + p)) + "\n" + r.Run.Diagnostics());
        }
    }

    private async Task<ScenarioResult> RunAsync(string testName, string[] sourceOptions, string[] destinationOptions)
    {
        var tools = InteropPrerequisites.RequireQemuGuest();
        var run = InteropRun.Create(testName);
        Log($"run directory: {run.Directory}");
        Log($"source backend: {string.Join(' ', sourceOptions)}; destination backend: {string.Join(' ', destinationOptions)}");
        var srcSock = run.PathFor("src.sock");
        var dstSock = run.PathFor("dst.sock");
        var srcStore = new AckedStateStore(run.PathFor("state-src"));
        var dstStore = new AckedStateStore(run.PathFor("state-dst"));
        var port = MigrationQmp.FreeTcpPort();

        var (dstCaps, dstCapsJson) = await MigrationQmp.PrintSampleCapabilitiesAsync(run, destinationOptions, "dst-capabilities");
        Log($"destination --print-capabilities: virtio {Describe(dstCaps.VirtioFeatures)}, protocol {Hex(dstCaps.ProtocolFeatures)}, latest profile {dstCaps.Catalog?.Latest.Id}");
        run.AddArtifact("destination capabilities", run.PathFor("dst-capabilities.json"));
        _ = dstCapsJson;

        await using var srcBackend = await SampleNetBackend.StartAsync(run, srcSock,
            [.. sourceOptions, "--state-dir", srcStore.Directory, "--log-level", "Information"], "src-backend");
        await using var dstBackend = await SampleNetBackend.StartAsync(run, dstSock,
            [.. destinationOptions, "--state-dir", dstStore.Directory, "--log-level", "Information"], "dst-backend");
        Log($"backends up: src pid {srcBackend.Process.Pid}, dst pid {dstBackend.Process.Pid}");

        // Destination first: it connects to its backend at start-up and then waits for the incoming stream.
        var dstOptions = GuestOptions(dstSock);
        dstOptions.ExtraArguments.Add("-incoming");
        dstOptions.ExtraArguments.Add($"tcp:127.0.0.1:{port.ToString(CultureInfo.InvariantCulture)}");
        // -S: after loading, the destination holds (paused) until 'cont', so its RAM can be compared with the stopped source's.
        dstOptions.ExtraArguments.Add("-S");
        await using var dst = await QemuGuest.StartAsync(run, tools, dstOptions, "dst");
        await using var src = await QemuGuest.StartAsync(run, tools, GuestOptions(srcSock), "src");
        Log($"QEMU src pid {src.Process.Pid}, dst pid {dst.Process.Pid} (-incoming tcp:127.0.0.1:{port})");

        var status = await src.WaitForNetStatusAsync(GuestStatusTimeout);
        if (status is null)
        {
            var why = src.Process.HasExited ? $"QEMU exited with {src.Process.ExitCode}" : $"nothing within {GuestStatusTimeout.TotalSeconds:F0} s";
            Assert.Fail($"the source guest never printed its virtio-net status line ({why}){run.Diagnostics()}");
        }

        Log($"source guest up after {status.SeenAfter.TotalSeconds:F1} s: status=0x{status.Status:x2} features {Describe(status.Features)}");
        var ticks = await MigrationQmp.WaitForTicksAsync(src, 0, 2, TimeSpan.FromSeconds(60));
        if (ticks.Count < 2)
        {
            Assert.Fail($"the source guest did not start ticking (loop mode): {ticks.Count} tick(s){run.Diagnostics()}");
        }

        // Preflight, before anything is paused: the source's acked-state record vs the destination's capability document.
        var srcKey = AckedStateStore.DefaultKey(srcSock);
        if (!await LogFile.WaitForPathAsync(srcStore.PathFor(srcKey), TimeSpan.FromSeconds(20), srcBackend.Process))
        {
            Assert.Fail($"the source backend wrote no acked-state record {srcStore.PathFor(srcKey)}{run.Diagnostics()}");
        }

        var record = srcStore.Load(srcKey)!;
        run.AddArtifact("source acked-state record", srcStore.PathFor(srcKey));
        Log($"source record: acked {Describe(record.AckedFeatures)}, profile {record.Profile?.ToString() ?? "(none)"}");
        var preflight = PreflightCheck.Check(null, record, dstCaps);
        Log("PREFLIGHT " + preflight.ToText().TrimEnd().Replace("\n", "\n  PREFLIGHT ", StringComparison.Ordinal));

        var before = await MigrationQmp.VirtioNetStatusAsync(src.QmpPath, TimeSpan.FromSeconds(10));
        var dstView = await MigrationQmp.VirtioNetStatusAsync(dst.QmpPath, TimeSpan.FromSeconds(10));
        Log($"source guest-features (QMP): {before?["guest-features"]?.ToJsonString()}");
        Log($"destination host-features (QMP, what it will accept): {dstView?["host-features"]?.ToJsonString()}");

        // Migrate with return-path on both sides (the source learns of a failed load and keeps running).
        MigrationResult migration;
        var lastSourceTick = MigrationQmp.Ticks(src.ConsolePath)[^1].N;
        using (var cts = new CancellationTokenSource(MigrateTimeout + TimeSpan.FromSeconds(30)))
        {
            await using (var dq = await dst.ConnectQmpAsync(cts.Token))
            {
                await MigrationQmp.EnableReturnPathAsync(dq, cts.Token);
            }

            await using var sq = await src.ConnectQmpAsync(cts.Token);
            Log($"MIGRATE src -> tcp:127.0.0.1:{port} (return-path) after source tick {lastSourceTick}");
            migration = await MigrationQmp.MigrateAsync(sq, $"tcp:127.0.0.1:{port.ToString(CultureInfo.InvariantCulture)}", returnPath: true, MigrateTimeout, cts.Token);
        }

        var qmFile = run.PathFor("query-migrate.json");
        await File.WriteAllTextAsync(qmFile, string.Join('\n', migration.Trace) + "\n" + migration.QueryMigrateJson + "\n");
        run.AddArtifact("source query-migrate (final)", qmFile);
        Log($"MIGRATE {string.Join("; ", migration.Trace)} -> {migration.Status} in {migration.Elapsed.TotalSeconds:F2} s");
        Log($"query-migrate: {migration.QueryMigrateJson}");

        (int Count, IReadOnlyList<long> First)? ramDiff = null;
        if (migration.Status == "completed")
        {
            var loaded = await MigrationQmp.WaitForRunStateAsync(dst, "paused", TimeSpan.FromSeconds(30));
            Log($"destination after loading the state: {loaded}");
            if (loaded == "paused")
            {
                var srcRam = run.PathFor("src.ram");
                var dstRam = run.PathFor("dst.ram");
                try
                {
                    var size = (long)dstOptions.MemoryMb * 1024 * 1024;
                    await MigrationMemory.DumpAsync(src.QmpPath, size, srcRam, TimeSpan.FromSeconds(60));
                    await MigrationMemory.DumpAsync(dst.QmpPath, size, dstRam, TimeSpan.FromSeconds(60));
                    ramDiff = MigrationMemory.DifferingPages(srcRam, dstRam);
                    Log($"guest RAM, stopped source vs loaded destination: {ramDiff.Value.Count} differing 4 KiB page(s) {string.Join(' ', ramDiff.Value.First.Select(a => "0x" + a.ToString("x", CultureInfo.InvariantCulture)))}");
                }
                catch (Exception e) when (e is IOException or OperationCanceledException or InvalidOperationException or System.Net.Sockets.SocketException)
                {
                    Log($"guest RAM comparison failed: {e.Message}");
                }
                finally
                {
                    File.Delete(srcRam);
                    File.Delete(dstRam);
                }

                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
                await using var dq = await dst.ConnectQmpAsync(cts.Token);
                await dq.ExecuteAsync("cont", null, cts.Token);
            }
        }

        var dstState = await MigrationQmp.WaitForRunStateAsync(dst, "running", TimeSpan.FromSeconds(30));
        if (dstState == "exited")
        {
            await dst.Process.WaitForExitAsync(TimeSpan.FromSeconds(5));
        }

        var srcState = await MigrationQmp.QueryStatusAsync(src.QmpPath, TimeSpan.FromSeconds(10)) ?? "(no answer)";
        Log($"after migration: destination {dstState}, source {srcState}");

        IReadOnlyList<GuestTick> dstTicks = [];
        IReadOnlyList<GuestTick> srcTicksAfter = [];
        JsonObject? after = null;
        AckedStateRecord? dstRecord = null;
        if (dstState == "running")
        {
            var onSource = MigrationQmp.Ticks(src.ConsolePath);
            var lastOnSource = onSource.Count > 0 ? onSource[^1].N : lastSourceTick;
            dstTicks = await MigrationQmp.WaitForTicksAsync(dst, lastOnSource, 3, TimeSpan.FromSeconds(30));
            Log($"destination ticks after source tick {lastOnSource}: {string.Join("; ", dstTicks)}");
            after = await MigrationQmp.VirtioNetStatusAsync(dst.QmpPath, TimeSpan.FromSeconds(10));
            Log($"destination guest-features (QMP): {after?["guest-features"]?.ToJsonString()}");
            var dstKey = AckedStateStore.DefaultKey(dstSock);
            if (await LogFile.WaitForPathAsync(dstStore.PathFor(dstKey), TimeSpan.FromSeconds(10), dstBackend.Process))
            {
                dstRecord = dstStore.Load(dstKey);
                Log($"destination record: acked {Describe(dstRecord!.AckedFeatures)}, profile {dstRecord.Profile?.ToString() ?? "(none)"}");
            }
        }
        else
        {
            srcTicksAfter = await MigrationQmp.WaitForTicksAsync(src, lastSourceTick, 2, TimeSpan.FromSeconds(30));
            Log($"source ticks after the failed migration: {string.Join("; ", srcTicksAfter)}");
        }

        var dstStderr = LogFile.ReadLines(dst.StderrPath);
        foreach (var l in dstStderr)
        {
            Log("QEMU dst stderr: " + l);
        }

        var featuresLine = dstStderr.FirstOrDefault(l => MigrationQmp.FeaturesUnsupportedLine.IsMatch(l));
        var oops = LogFile.ReadLines(dst.ConsolePath).Where(l => l.Contains("BUG:", StringComparison.Ordinal) || l.Contains("Oops", StringComparison.Ordinal)
            || l.Contains("Kernel panic", StringComparison.Ordinal) || l.Contains("RIP:", StringComparison.Ordinal)).Take(12).ToList();
        var result = new ScenarioResult(run, record, preflight, migration, dstState, srcState, dstTicks, srcTicksAfter,
            before?["guest-features"], after?["guest-features"], dstRecord, featuresLine, oops, ramDiff, status.Features,
            new Dictionary<string, IReadOnlyList<string>> { ["source"] = srcBackend.ErrorEntries(), ["destination"] = dstBackend.ErrorEntries() });
        Log($"scenario done after {_clock.Elapsed.TotalSeconds:F1} s (processes stopped next)");
        return result;
    }

    private static QemuGuestOptions GuestOptions(string socket)
    {
        var o = new QemuGuestOptions { SocketPath = socket, Timeout = TimeSpan.FromMinutes(4) };
        o.GuestParameters["mode"] = "loop";
        return o;
    }

    private void Log(string message) =>
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[{_clock.Elapsed.TotalSeconds,6:F1}s] {message}"));

    private sealed record ScenarioResult(
        InteropRun Run,
        AckedStateRecord SourceRecord,
        PreflightResult Preflight,
        MigrationResult Migration,
        string DestinationState,
        string SourceStateAfter,
        IReadOnlyList<GuestTick> DestinationTicks,
        IReadOnlyList<GuestTick> SourceTicksAfter,
        JsonNode? GuestFeaturesBefore,
        JsonNode? GuestFeaturesAfter,
        AckedStateRecord? DestinationRecord,
        string? QemuFeaturesLine,
        IReadOnlyList<string> DestinationOops,
        (int Count, IReadOnlyList<long> First)? RamDiff,
        ulong GuestFeatures,
        IReadOnlyDictionary<string, IReadOnlyList<string>> BackendErrors)
    {
        public List<string> Problems { get; } = [];
    }
}
