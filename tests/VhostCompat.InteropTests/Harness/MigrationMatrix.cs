using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using VhostCompat.Compat;

namespace VhostCompat.InteropTests.Harness;

/// <summary>
/// One emulated samples/Net release as started for a VM: <c>--build N</c> (catalog org.vhostcompat.net.v1..vN)
/// and optionally <c>--compat-profile org.vhostcompat.net.vP</c> and <c>--state-version N</c>.
/// </summary>
/// <param name="Build">1..3.</param>
/// <param name="PinnedVersion">The pinned catalog version, or null (unpinned: the build offers its latest profile).</param>
/// <param name="PinValues">
/// Pin by value list instead of by id: catalog version <paramref name="PinnedVersion"/>'s values plus extra keys
/// (e.g. <c>device_state=off</c>); <see cref="PinLabel"/> names them.
/// </param>
/// <param name="PinLabel">How <paramref name="PinValues"/> is shown, e.g. "v1+device_state=off".</param>
public sealed record MatrixBackend(int Build, int? PinnedVersion, string? PinValues = null, string? PinLabel = null)
{
    /// <summary><c>--state-version N</c>: a release whose device-state format is N (null: the sample's own, 1).</summary>
    public int? StateVersion { get; init; }

    private string StateSuffix => StateVersion is { } s ? $" state v{s.ToString(CultureInfo.InvariantCulture)}" : string.Empty;

    /// <summary>"b3/v2" or "b3" (used in file names and the table).</summary>
    public string Short => (PinnedVersion is { } v ? $"b{Build}/v{v}" : $"b{Build}") + (StateVersion is { } s ? $"/s{s}" : string.Empty);

    /// <summary>"build 3 pinned v2" / "build 3 unpinned" (+ " state v2").</summary>
    public string Label => (PinnedVersion is { } v ? $"build {Build} pinned {PinLabel ?? "v" + v.ToString(CultureInfo.InvariantCulture)}" : $"build {Build} unpinned") + StateSuffix;

    /// <summary>The samples/Net options for this release and pin.</summary>
    public IReadOnlyList<string> Options =>
    [
        "--build", Build.ToString(CultureInfo.InvariantCulture),
        .. PinnedVersion is { } v ? new[] { "--compat-profile", PinValues ?? "org.vhostcompat.net.v" + v.ToString(CultureInfo.InvariantCulture) } : [],
        .. StateVersion is { } s ? new[] { "--state-version", s.ToString(CultureInfo.InvariantCulture) } : [],
    ];

    /// <summary>
    /// How the matrix starts a destination of build <paramref name="build"/> for a VM whose source is
    /// <paramref name="source"/>: with the source's pin when that build can offer it (its catalog has the profile),
    /// otherwise unpinned — what an operator without VhostCompat would do; the preflight is what tells them not to.
    /// </summary>
    public static MatrixBackend DestinationFor(MatrixBackend source, int build)
    {
        ArgumentNullException.ThrowIfNull(source);
        return source.PinnedVersion is { } v && v <= build ? source with { Build = build } : new MatrixBackend(build, null);
    }
}

/// <summary>One migration of the matrix: from one running VM/backend to a freshly started one.</summary>
public sealed class MatrixHop
{
    public required string Row { get; init; }

    /// <summary>"forward" (source row -> destination build) or "return" (back to a fresh source-row backend).</summary>
    public required string Leg { get; init; }

    public required MatrixBackend From { get; init; }

    public required MatrixBackend To { get; init; }

    public required PreflightResult Preflight { get; init; }

    /// <summary>The acked-state record of the source backend the preflight ran on.</summary>
    public required AckedStateRecord Record { get; init; }

    /// <summary>The destination build's capability document the preflight ran against.</summary>
    public required VhostCompat.Compat.BackendCapabilities DestinationCapabilities { get; init; }

    /// <summary>The source's QEMU build and machine type (null: the one QEMU of a single-version matrix).</summary>
    public MatrixFrontend? FromFrontend { get; init; }

    /// <summary>The destination's QEMU build and machine type.</summary>
    public MatrixFrontend? ToFrontend { get; init; }

    /// <summary>"QEMU 10.0 pc-q35-7.2, build 3 unpinned" (or the backend alone).</summary>
    public string FromLabel => FromFrontend is null ? From.Label : $"{FromFrontend.Label}, {From.Label}";

    /// <summary>The destination, like <see cref="FromLabel"/>.</summary>
    public string ToLabel => ToFrontend is null ? To.Label : $"{ToFrontend.Label}, {To.Label}";

    /// <summary>SET_DEVICE_STATE_FD / CHECK_DEVICE_STATE requests either backend logged during the hop (Debug log only).</summary>
    public int DeviceStateRequests { get; set; }

    /// <summary>
    /// Set when the destination backend is to refuse the source's device state (a foreign format, a blob corrupted in
    /// transfer): the SDK's reason, which the destination backend must log as "Refused request CHECK_DEVICE_STATE: REASON".
    /// Neither acked-state records nor capability documents carry device-state versions, so the preflight cannot see this:
    /// such a hop is expected to fail although the preflight says compatible.
    /// </summary>
    public string? ExpectedStateRefusal { get; init; }

    /// <summary>QEMU's "Error loading  back-end state of ..." line, if the destination printed one.</summary>
    public string? QemuStateLine { get; set; }

    /// <summary>The destination backend's "Refused request CHECK_DEVICE_STATE: ..." line, if it logged one.</summary>
    public string? BackendStateRefusal { get; set; }

    public MigrationResult? Migration { get; set; }

    /// <summary>Run state of the destination QEMU after the migration ("running", "exited", ...).</summary>
    public string DestinationState { get; set; } = "(not started)";

    /// <summary>QEMU's "Features 0x... unsupported. Allowed features: 0x..." line, if the destination printed one.</summary>
    public string? QemuFeaturesLine { get; set; }

    /// <summary>Every line the destination QEMU wrote to stderr.</summary>
    public IReadOnlyList<string> DestinationStderr { get; set; } = [];

    /// <summary>The last ping replies the guest got on the source (sequence numbers; after a completed migration, the very last ones there).</summary>
    public IReadOnlyList<int> RepliesBefore { get; set; } = [];

    /// <summary>Ping replies after the migration: on the destination when it completed, on the source otherwise.</summary>
    public IReadOnlyList<int> RepliesAfter { get; set; } = [];

    public List<string> Problems { get; } = [];

    public bool QemuMigrated => Migration?.Status == "completed";

    /// <summary>The preflight says compatible and the destination is not meant to refuse the device state.</summary>
    public bool ExpectedToMigrate => Preflight.Compatible && ExpectedStateRefusal is null;

    public bool Agrees => ExpectedToMigrate == QemuMigrated;

    /// <summary>downtime / total-time from the final query-migrate, when completed.</summary>
    public string Timing
    {
        get
        {
            if (Migration is null || JsonNode.Parse(Migration.QueryMigrateJson) is not JsonObject o)
            {
                return string.Empty;
            }

            var total = o["total-time"]?.GetValue<long>();
            var down = o["downtime"]?.GetValue<long>();
            return total is null ? string.Empty : string.Create(CultureInfo.InvariantCulture, $"total {total} ms, downtime {down} ms");
        }
    }

    /// <summary>Ping sequence numbers the guest never got a reply for across the migration: first on the destination - last on the source - 1.</summary>
    public int LostAcross => RepliesBefore.Count == 0 || RepliesAfter.Count == 0 ? -1 : Math.Max(0, RepliesAfter.Min() - RepliesBefore.Max() - 1);

    /// <summary>One markdown table line: row | leg | from | to | preflight | QEMU | agrees.</summary>
    public string TableLine()
    {
        var errors = Preflight.Findings.Where(f => f.Severity == PreflightSeverity.Error).Select(f => f.Features.Count > 0 ? $"{f.Code}: {string.Join(", ", f.Features)}" : f.Code);
        var verdict = (Preflight.Compatible ? "compatible" : "incompatible (" + string.Join("; ", errors) + ")")
                      + (ExpectedStateRefusal is null ? string.Empty : "; the destination refuses the device state");
        var qemu = Migration is null ? $"not started: destination {DestinationState} ({string.Join(" ", DestinationStderr.Take(1))})" : Migration.Status == "completed"
            ? $"completed ({Timing}); destination {DestinationState}; ping lost {LostAcross}"
            : $"{Migration.Status}; destination {DestinationState}";
        return $"| {Row} | {Leg} | {FromLabel} | {ToLabel} | {verdict} | {qemu} | {(Agrees ? "yes" : "**NO**")} |";
    }
}

/// <summary>Busy-box ping reply lines of the pingloop guest and the shared matrix result file.</summary>
public static class MatrixGuest
{
    /// <summary>"64 bytes from 10.0.0.1: seq=5 ttl=64 time=0.871 ms" (busybox ping).</summary>
    public static readonly Regex PingReply = new(@"bytes from (?<ip>[0-9.]+): seq=(?<seq>\d+) ttl=\d+", RegexOptions.CultureInvariant);

    /// <summary>Kernel trouble on a guest console.</summary>
    public static readonly Regex KernelTrouble = new(@"BUG:|Oops|Kernel panic|RIP:|general protection|kernel tried to execute", RegexOptions.CultureInvariant);

    /// <summary>Sequence numbers of the ping replies on a console, in order.</summary>
    public static IReadOnlyList<int> Replies(string consolePath) =>
        LogFile.ReadLines(consolePath).Select(l => PingReply.Match(l)).Where(m => m.Success)
            .Select(m => int.Parse(m.Groups["seq"].Value, CultureInfo.InvariantCulture)).ToList();

    /// <summary>Waits until the console shows <paramref name="count"/> replies with seq above <paramref name="after"/>.</summary>
    public static async Task<IReadOnlyList<int>> WaitForRepliesAsync(QemuGuest guest, int after, int count, TimeSpan timeout)
    {
        ArgumentNullException.ThrowIfNull(guest);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (true)
        {
            var exited = guest.Process.HasExited;
            var replies = Replies(guest.ConsolePath).Where(s => s > after).ToList();
            if (replies.Count >= count || exited || clock.Elapsed >= timeout)
            {
                return replies;
            }

            await Task.Delay(250).ConfigureAwait(false);
        }
    }

    /// <summary>Kernel oops/panic lines on a console (up to 40, with the lines around them).</summary>
    public static IReadOnlyList<string> Trouble(string consolePath)
    {
        var lines = LogFile.ReadLines(consolePath);
        var first = lines.ToList().FindIndex(l => KernelTrouble.IsMatch(l));
        return first < 0 ? [] : lines.Skip(Math.Max(0, first - 5)).Take(40).ToList();
    }

    /// <summary>
    /// Appends the row's table lines to <c>migration-matrix.md</c> in the interop directory (one file per test
    /// process, so a whole run's table can be copied into docs/compatibility.md).
    /// </summary>
    public static string AppendToTable(IEnumerable<MatrixHop> hops, string stem = "migration-matrix", string qemuColumn = "QEMU 7.2")
    {
        ArgumentNullException.ThrowIfNull(hops);
        var file = Path.Combine(Initramfs.CacheDirectory, $"{stem}-{Environment.ProcessId}.md");
        var sb = new StringBuilder();
        if (!File.Exists(file))
        {
            sb.Append($"| row | leg | from | to | preflight | {qemuColumn} | agree |\n|---|---|---|---|---|---|---|\n");
        }

        foreach (var h in hops)
        {
            sb.Append(h.TableLine()).Append('\n');
        }

        File.AppendAllText(file, sb.ToString());
        return file;
    }
}
