using System.Globalization;
using System.Text.Json.Nodes;
using VhostCompat.Virtio;
using static VhostCompat.InteropTests.Harness.VirtioNetFeatures;

namespace VhostCompat.InteropTests.Harness;

/// <summary>
/// One checked migration of a matrix: the caller has run the preflight (<see cref="MatrixHop.Preflight"/>); this
/// starts the destination, live-migrates over QMP with the return path, and records QEMU's real outcome and every
/// way it can disagree with the preflight in <see cref="MatrixHop.Problems"/>: a completed migration must leave the
/// guest pinging on the destination with the same guest-visible features and acked features; a failed one must
/// leave it pinging on the source, with QEMU's reason naming what the preflight named (or, for a hop whose destination
/// is meant to refuse the device state, <see cref="MatrixHop.ExpectedStateRefusal"/>, the back-end's refusal).
/// </summary>
public sealed class MatrixMigrator(Action<string> log)
{
    /// <summary>Reference harness: ~0.5-1 s for a TCG guest; generous for a loaded 2-core box.</summary>
    public TimeSpan MigrateTimeout { get; init; } = TimeSpan.FromSeconds(90);

    /// <summary>Ping once a second: 3 replies normally take 2-3 s.</summary>
    public TimeSpan RepliesTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Migrates the VM on <paramref name="from"/> to a node made by <paramref name="startDestination"/> (given the
    /// incoming port). Returns the new node when QEMU completed the migration and the guest works there (null otherwise:
    /// the VM is still on <paramref name="from"/>, unless <see cref="MatrixHop.QemuMigrated"/>).
    /// </summary>
    public async Task<MatrixNode?> MigrateAsync(MatrixHop hop, MatrixNode from, Func<int, Task<MatrixNode>> startDestination)
    {
        ArgumentNullException.ThrowIfNull(hop);
        ArgumentNullException.ThrowIfNull(from);
        ArgumentNullException.ThrowIfNull(startDestination);
        var port = MigrationQmp.FreeTcpPort();
        var repliesBefore = MatrixGuest.Replies(from.Qemu.ConsolePath);
        hop.RepliesBefore = repliesBefore.TakeLast(3).ToList();
        var lastSeq = repliesBefore.Count > 0 ? repliesBefore[^1] : -1;
        MatrixNode dst;
        try
        {
            dst = await startDestination(port).ConfigureAwait(false);
        }
        catch (QemuStartFailedException ex)
        {
            hop.DestinationState = "refused to start";
            hop.DestinationStderr = ex.Stderr;
            log($"destination QEMU refused to start: {string.Join(" | ", ex.Stderr)}");
            await CheckNotMigratedAsync(hop, from, null, lastSeq).ConfigureAwait(false);
            Finish(hop, from, null);
            return null;
        }

        var keep = false;
        try
        {
            var before = await MigrationQmp.VirtioNetStatusAsync(from.Qemu.QmpPath, TimeSpan.FromSeconds(10)).ConfigureAwait(false);
            using (var cts = new CancellationTokenSource(MigrateTimeout + TimeSpan.FromSeconds(30)))
            {
                await using (var dq = await dst.Qemu.ConnectQmpAsync(cts.Token).ConfigureAwait(false))
                {
                    await MigrationQmp.EnableReturnPathAsync(dq, cts.Token).ConfigureAwait(false);
                }

                await using var sq = await from.Qemu.ConnectQmpAsync(cts.Token).ConfigureAwait(false);
                hop.Migration = await MigrationQmp.MigrateAsync(sq, $"tcp:127.0.0.1:{port.ToString(CultureInfo.InvariantCulture)}", returnPath: true, MigrateTimeout, cts.Token).ConfigureAwait(false);
            }

            log($"MIGRATE after ping seq {lastSeq}: {string.Join("; ", hop.Migration.Trace)} -> {hop.Migration.Status} in {hop.Migration.Elapsed.TotalSeconds:F2} s {hop.Timing}");
            hop.DestinationState = await MigrationQmp.WaitForRunStateAsync(dst.Qemu, "running", TimeSpan.FromSeconds(30)).ConfigureAwait(false);
            if (hop.DestinationState == "exited")
            {
                await dst.Qemu.Process.WaitForExitAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
            }

            hop.DestinationStderr = LogFile.ReadLines(dst.Qemu.StderrPath);
            foreach (var l in hop.DestinationStderr)
            {
                log($"QEMU {dst.Name} stderr: {l}");
            }

            hop.QemuFeaturesLine = hop.DestinationStderr.FirstOrDefault(l => MigrationQmp.FeaturesUnsupportedLine.IsMatch(l));
            hop.QemuStateLine = hop.DestinationStderr.FirstOrDefault(l => MigrationQmp.BackendStateLoadFailedLine.IsMatch(l));
            if (hop.QemuMigrated)
            {
                keep = await CheckCompletedAsync(hop, from, dst, before, lastSeq).ConfigureAwait(false);
            }
            else
            {
                if (hop.Migration.Status != "failed")
                {
                    hop.Problems.Add($"query-migrate ended with '{hop.Migration.Status}' (expected completed or failed): {hop.Migration.QueryMigrateJson}");
                }

                if (hop.DestinationState != "exited")
                {
                    hop.Problems.Add($"destination QEMU ({dst.Name}) is '{hop.DestinationState}' after the failed load, expected it to have exited");
                }

                await CheckNotMigratedAsync(hop, from, dst, lastSeq).ConfigureAwait(false);
            }

            Finish(hop, from, dst);
            return keep ? dst : null;
        }
        finally
        {
            if (!keep)
            {
                await dst.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    private async Task<bool> CheckCompletedAsync(MatrixHop hop, MatrixNode from, MatrixNode dst, JsonObject? before, int lastSeq)
    {
        if (before is null)
        {
            hop.Problems.Add("x-query-virtio-status on the source gave no answer before the migration");
        }

        if (hop.DestinationState != "running")
        {
            hop.Problems.Add($"destination QEMU ({dst.Name}) is '{hop.DestinationState}' after a completed migration, expected 'running'");
        }

        // The source is stopped now: its console holds the last reply the guest got there.
        var onSource = MatrixGuest.Replies(from.Qemu.ConsolePath);
        hop.RepliesBefore = onSource.TakeLast(3).ToList();
        lastSeq = onSource.Count > 0 ? onSource[^1] : lastSeq;
        hop.RepliesAfter = await MatrixGuest.WaitForRepliesAsync(dst.Qemu, lastSeq, 3, RepliesTimeout).ConfigureAwait(false);
        log($"ping replies on {dst.Name} after the migration: seq {string.Join(",", hop.RepliesAfter)} (lost across: {hop.LostAcross})");
        if (hop.RepliesAfter.Count < 3)
        {
            hop.Problems.Add($"the guest got {hop.RepliesAfter.Count} ping replies on the destination within {RepliesTimeout.TotalSeconds:F0} s (3 expected): it does not keep working");
        }

        var after = await MigrationQmp.VirtioNetStatusAsync(dst.Qemu.QmpPath, TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        var b = before?["guest-features"]?.ToJsonString();
        var a = after?["guest-features"]?.ToJsonString();
        if (b is not null && a == b)
        {
            log($"guest-features identical before and after ({b.Length} bytes of x-query-virtio-status)");
        }
        else
        {
            hop.Problems.Add($"guest-visible features (x-query-virtio-status guest-features) differ: before {b ?? "(none)"}, after {a ?? "(none)"}");
        }

        if (!await LogFile.WaitForPathAsync(dst.RecordPath, TimeSpan.FromSeconds(20), dst.Backend.Process).ConfigureAwait(false))
        {
            hop.Problems.Add("the destination backend wrote no acked-state record (no DRIVER_OK from the incoming VM?)");
        }
        else if (dst.Store.Load(dst.Key) is { } dstRecord
                 && (dstRecord.AckedFeatures & ~VirtioFeatureBits.LogAll) != (hop.Record.AckedFeatures & ~VirtioFeatureBits.LogAll))
        {
            hop.Problems.Add($"the destination backend was acked {Describe(dstRecord.AckedFeatures)}, the source backend {Describe(hop.Record.AckedFeatures)}");
        }

        return hop.RepliesAfter.Count > 0 && hop.DestinationState == "running";
    }

    /// <summary>The VM must still run on the source, and QEMU's reason must be the preflight's (or the expected device-state refusal).</summary>
    private async Task CheckNotMigratedAsync(MatrixHop hop, MatrixNode from, MatrixNode? dst, int lastSeq)
    {
        var srcState = await MigrationQmp.QueryStatusAsync(from.Qemu.QmpPath, TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        if (srcState != "running")
        {
            hop.Problems.Add($"source QEMU is '{srcState ?? "(no answer)"}' after the failed migration, expected 'running' (return-path)");
        }

        hop.RepliesAfter = await MatrixGuest.WaitForRepliesAsync(from.Qemu, lastSeq, 2, RepliesTimeout).ConfigureAwait(false);
        log($"ping replies on the source after the failed migration: seq {string.Join(",", hop.RepliesAfter)}");
        if (hop.RepliesAfter.Count < 2)
        {
            hop.Problems.Add($"after the failed migration the guest got {hop.RepliesAfter.Count} ping replies on the source within {RepliesTimeout.TotalSeconds:F0} s (2 expected)");
        }

        var preflightCodes = hop.Preflight.Findings.Where(f => f.Severity == Compat.PreflightSeverity.Error).Select(f => f.Code).ToHashSet(StringComparer.Ordinal);
        if (hop.DestinationState == "refused to start")
        {
            // QEMU 7.2 on a machine type it does not have: "unsupported machine type".
            var machineLine = hop.DestinationStderr.FirstOrDefault(l => l.Contains("machine type", StringComparison.Ordinal));
            if (machineLine is null || !preflightCodes.Contains("machine-type"))
            {
                hop.Problems.Add($"the destination QEMU refused to start ({string.Join(" | ", hop.DestinationStderr)}); the preflight's errors were [{string.Join(", ", preflightCodes)}] (machine-type expected with a 'machine type' line)");
            }

            return;
        }

        if (hop.ExpectedStateRefusal is { } reason)
        {
            CheckStateRefusal(hop, dst, reason);
            return;
        }

        if (hop.QemuFeaturesLine is not { } line)
        {
            // QEMU 7.2 loading a stream in which QEMU 10.0 put the backend's device state (DEVICE_STATE acked): it fails
            // in virtio-net's state before it compares features.
            if (hop.DestinationStderr.Any(l => l.Contains("Failed to load virtio-net:virtio", StringComparison.Ordinal)))
            {
                if (!preflightCodes.Contains("device-state-stream"))
                {
                    hop.Problems.Add($"the destination failed to load virtio-net's state without a features line ({string.Join(" | ", hop.DestinationStderr)}); the preflight's errors were [{string.Join(", ", preflightCodes)}] (device-state-stream expected)");
                }

                return;
            }

            hop.Problems.Add("destination QEMU stderr has no 'Features 0x... unsupported. Allowed features: 0x...' line");
            return;
        }

        // QEMU's own reason, decoded, must be exactly what the preflight's features-unsupported finding names.
        var m = MigrationQmp.FeaturesUnsupportedLine.Match(line);
        var qemuMissing = VirtioFeatures.Names(VirtioDeviceType.Net, ParseHex(m.Groups["acked"].Value) & ~ParseHex(m.Groups["allowed"].Value));
        var preflightMissing = hop.Preflight.Findings.FirstOrDefault(f => f.Code == "features-unsupported")?.Features ?? [];
        log($"QEMU refused {string.Join(", ", qemuMissing)}; the preflight's features-unsupported named {string.Join(", ", preflightMissing)}");
        if (!qemuMissing.Order(StringComparer.Ordinal).SequenceEqual(preflightMissing.Order(StringComparer.Ordinal)))
        {
            hop.Problems.Add($"QEMU refused [{string.Join(", ", qemuMissing)}] but the preflight's features-unsupported finding named [{string.Join(", ", preflightMissing)}]");
        }
    }

    /// <summary>
    /// A destination meant to refuse the device state: its backend must have refused CHECK_DEVICE_STATE with the expected
    /// reason, and QEMU must have failed the load on that (its back-end state line), not on the virtio features.
    /// </summary>
    private void CheckStateRefusal(MatrixHop hop, MatrixNode? dst, string reason)
    {
        hop.BackendStateRefusal = dst is null ? null : LogFile.ReadLines(dst.Backend.LogPath).FirstOrDefault(l => l.Contains("Refused request CHECK_DEVICE_STATE: ", StringComparison.Ordinal));
        log($"destination backend: {hop.BackendStateRefusal ?? "(no CHECK_DEVICE_STATE refusal)"}; QEMU: {hop.QemuStateLine ?? "(no back-end state line)"}");
        if (hop.BackendStateRefusal is null || !hop.BackendStateRefusal.EndsWith(": " + reason, StringComparison.Ordinal))
        {
            hop.Problems.Add($"the destination backend was to refuse CHECK_DEVICE_STATE with '{reason}', it logged {hop.BackendStateRefusal ?? "no refusal"}");
        }

        if (hop.QemuStateLine is null)
        {
            hop.Problems.Add("destination QEMU stderr has no 'Error loading  back-end state of ...' line");
        }

        if (hop.QemuFeaturesLine is { } features)
        {
            hop.Problems.Add($"destination QEMU also refused the virtio features ({features}): the hop does not test the device state alone");
        }
    }

    /// <summary>Kernel trouble, backend errors, and the verdict against the outcome.</summary>
    private void Finish(MatrixHop hop, MatrixNode from, MatrixNode? dst)
    {
        foreach (var (node, what) in new[] { (dst, "destination"), (from, "source") })
        {
            if (node is null)
            {
                continue;
            }

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

        var verdict = hop.Preflight.Compatible ? "compatible" : "incompatible";
        var outcome = hop.Migration?.Status ?? hop.DestinationState;
        var refusal = hop.ExpectedStateRefusal is null ? string.Empty : " (the destination to refuse the device state)";
        log($"VERDICT {hop.FromLabel} -> {hop.ToLabel}: preflight {verdict}{refusal}, QEMU {outcome}{(hop.Agrees ? string.Empty : "  ** DISAGREE **")}");
        if (!hop.Agrees)
        {
            var expected = hop.ExpectedStateRefusal is null ? string.Empty : $" and the destination was to refuse the device state ({hop.ExpectedStateRefusal})";
            hop.Problems.Insert(0, $"PREFLIGHT DISAGREES WITH QEMU: preflight said {verdict}{expected}, QEMU {(hop.QemuMigrated ? "migrated the VM" : "did not migrate it")} " +
                                   $"(query-migrate {hop.Migration?.Status ?? "(not run)"}, destination {hop.DestinationState}); record of {from.Name}: acked {Describe(hop.Record.AckedFeatures)}, " +
                                   $"profile {hop.Record.Profile?.Id ?? hop.Record.Profile?.ToString() ?? "(none)"}; destination capability {Describe(hop.DestinationCapabilities.VirtioFeatures)}\n{hop.Preflight.ToText()}");
        }
    }
}
