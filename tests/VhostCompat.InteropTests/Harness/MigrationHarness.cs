using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using LibCapabilities = VhostCompat.Compat.BackendCapabilities;

namespace VhostCompat.InteropTests.Harness;

/// <summary>How a live migration started with <see cref="MigrationQmp.MigrateAsync"/> ended.</summary>
/// <param name="Status">The final query-migrate status (completed, failed, cancelled) or "timeout".</param>
/// <param name="QueryMigrateJson">The last query-migrate reply.</param>
/// <param name="Elapsed">From the migrate command to the final status.</param>
/// <param name="Trace">"t=0.20s status=active" per status change.</param>
public sealed record MigrationResult(string Status, string QueryMigrateJson, TimeSpan Elapsed, IReadOnlyList<string> Trace)
{
    /// <summary>error-desc of the last query-migrate reply, if any.</summary>
    public string? ErrorDescription =>
        JsonNode.Parse(QueryMigrateJson) is JsonObject o && o["error-desc"] is JsonNode d ? d.GetValue<string>() : null;
}

/// <summary>One "VHOSTCOMPAT: tick ..." line of the loop-mode guest.</summary>
public sealed record GuestTick(int N, long TxPackets, long RxPackets, int Status);

/// <summary>
/// Live migration over QMP the way the reference harness (qemu-migrate.sh / qmp.py) does it: return-path on both
/// sides (so the source learns of a failed load), max-bandwidth raised (QEMU 7.2's default is 32 MiB/s), migrate,
/// then poll query-migrate.
/// </summary>
public static class MigrationQmp
{
    public static readonly Regex TickLine = new(
        @"VHOSTCOMPAT: tick n=(?<n>\d+) tx_packets=(?<tx>\d+) rx_packets=(?<rx>\d+) status=0x(?<st>[0-9a-fA-F]+)", RegexOptions.CultureInvariant);

    /// <summary>QEMU's virtio_load error: "Features 0x... unsupported. Allowed features: 0x...".</summary>
    public static readonly Regex FeaturesUnsupportedLine = new(
        @"Features 0x(?<acked>[0-9a-fA-F]+) unsupported\. Allowed features: 0x(?<allowed>[0-9a-fA-F]+)", RegexOptions.CultureInvariant);

    /// <summary>
    /// QEMU 10.0's vmstate error when CHECK_DEVICE_STATE reports that the back-end could not load its state, e.g.
    /// "Error loading  back-end state of virtio-net device /machine/peripheral/net0/virtio-backend: Back-end failed to process its internal state"
    /// (two spaces after "loading" in QEMU's own text).
    /// </summary>
    public static readonly Regex BackendStateLoadFailedLine = new(
        @"Error loading +back-end state of (?<type>\S+) device (?<device>\S+): (?<reason>.+)$", RegexOptions.CultureInvariant);

    /// <summary>A TCP port on 127.0.0.1 that was free a moment ago (for <c>-incoming tcp:127.0.0.1:PORT</c>).</summary>
    public static int FreeTcpPort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        var port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    public static Task EnableReturnPathAsync(QmpClient qmp, CancellationToken cancellationToken) =>
        SetCapabilitiesAsync(qmp, [("return-path", true)], cancellationToken);

    /// <summary>Starts migrating to <paramref name="uri"/> and polls query-migrate until it ends or <paramref name="timeout"/> passes.</summary>
    public static async Task<MigrationResult> MigrateAsync(QmpClient source, string uri, bool returnPath, TimeSpan timeout, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(source);
        var caps = new List<(string, bool)> { ("events", true) };
        if (returnPath)
        {
            caps.Add(("return-path", true));
        }

        await SetCapabilitiesAsync(source, caps, cancellationToken).ConfigureAwait(false);
        await source.ExecuteAsync("migrate-set-parameters", new JsonObject { ["max-bandwidth"] = 10L * 1024 * 1024 * 1024 }, cancellationToken).ConfigureAwait(false);
        var clock = Stopwatch.StartNew();
        await source.ExecuteAsync("migrate", new JsonObject { ["uri"] = uri }, cancellationToken).ConfigureAwait(false);
        var trace = new List<string>();
        string? last = null;
        var json = "{}";
        while (clock.Elapsed < timeout)
        {
            var m = await source.ExecuteAsync("query-migrate", null, cancellationToken).ConfigureAwait(false);
            json = m?.ToJsonString() ?? "{}";
            var status = m?["status"]?.GetValue<string>() ?? "(none)";
            if (status != last)
            {
                trace.Add(string.Create(CultureInfo.InvariantCulture, $"t={clock.Elapsed.TotalSeconds:F2}s status={status}"));
                last = status;
            }

            if (status is "completed" or "failed" or "cancelled")
            {
                return new MigrationResult(status, json, clock.Elapsed, trace);
            }

            await Task.Delay(200, cancellationToken).ConfigureAwait(false);
        }

        return new MigrationResult("timeout", json, clock.Elapsed, trace);
    }

    /// <summary>query-status .status, or null when QMP does not answer (QEMU gone).</summary>
    public static async Task<string?> QueryStatusAsync(string qmpPath, TimeSpan timeout)
    {
        try
        {
            using var cts = new CancellationTokenSource(timeout);
            await using var qmp = await QmpClient.ConnectAsync(qmpPath, cts.Token).ConfigureAwait(false);
            var r = await qmp.ExecuteAsync("query-status", null, cts.Token).ConfigureAwait(false);
            return r?["status"]?.GetValue<string>();
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or SocketException or InvalidOperationException or JsonException)
        {
            return null;
        }
    }

    /// <summary>
    /// Polls the guest's run state until it is <paramref name="wanted"/>, QEMU exits, or the timeout passes.
    /// Returns the last state seen, "exited" when QEMU is gone.
    /// </summary>
    public static async Task<string> WaitForRunStateAsync(QemuGuest guest, string wanted, TimeSpan timeout)
    {
        ArgumentNullException.ThrowIfNull(guest);
        var clock = Stopwatch.StartNew();
        var last = "unknown";
        while (clock.Elapsed < timeout)
        {
            if (guest.Process.HasExited)
            {
                return "exited";
            }

            var st = await QueryStatusAsync(guest.QmpPath, TimeSpan.FromSeconds(5)).ConfigureAwait(false);
            if (st is not null)
            {
                last = st;
                if (st == wanted)
                {
                    return st;
                }
            }

            await Task.Delay(200).ConfigureAwait(false);
        }

        return guest.Process.HasExited ? "exited" : last;
    }

    /// <summary>x-query-virtio-status of the first virtio-net device (guest-features, host-features, status ...), or null.</summary>
    public static async Task<JsonObject?> VirtioNetStatusAsync(string qmpPath, TimeSpan timeout)
    {
        try
        {
            using var cts = new CancellationTokenSource(timeout);
            await using var qmp = await QmpClient.ConnectAsync(qmpPath, cts.Token).ConfigureAwait(false);
            if (await qmp.ExecuteAsync("x-query-virtio", null, cts.Token).ConfigureAwait(false) is not JsonArray devices)
            {
                return null;
            }

            foreach (var d in devices)
            {
                if (d?["name"]?.GetValue<string>() == "virtio-net" && d["path"]?.GetValue<string>() is { } path)
                {
                    return await qmp.ExecuteAsync("x-query-virtio-status", new JsonObject { ["path"] = path }, cts.Token).ConfigureAwait(false) as JsonObject;
                }
            }

            return null;
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or SocketException or InvalidOperationException or JsonException)
        {
            return null;
        }
    }

    /// <summary>The loop-mode guest's tick lines in <paramref name="consolePath"/>.</summary>
    public static IReadOnlyList<GuestTick> Ticks(string consolePath) =>
        LogFile.ReadLines(consolePath).Select(l => TickLine.Match(l)).Where(m => m.Success).Select(m => new GuestTick(
            int.Parse(m.Groups["n"].Value, CultureInfo.InvariantCulture),
            long.Parse(m.Groups["tx"].Value, CultureInfo.InvariantCulture),
            long.Parse(m.Groups["rx"].Value, CultureInfo.InvariantCulture),
            int.Parse(m.Groups["st"].Value, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture))).ToList();

    /// <summary>Waits until the console holds <paramref name="count"/> ticks with n greater than <paramref name="after"/>; returns them (fewer on timeout/exit).</summary>
    public static async Task<IReadOnlyList<GuestTick>> WaitForTicksAsync(QemuGuest guest, int after, int count, TimeSpan timeout)
    {
        ArgumentNullException.ThrowIfNull(guest);
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var exited = guest.Process.HasExited;
            var ticks = Ticks(guest.ConsolePath).Where(t => t.N > after).ToList();
            if (ticks.Count >= count || exited || clock.Elapsed >= timeout)
            {
                return ticks;
            }

            await Task.Delay(250).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Runs the Net sample with <c>--print-capabilities</c> and the given options (e.g. --build 2) and parses its
    /// document with the SDK's own reader (<see cref="VhostCompat.Compat.CapabilityDocument.Parse"/>).
    /// </summary>
    public static async Task<(LibCapabilities Capabilities, string Json)> PrintSampleCapabilitiesAsync(InteropRun run, IEnumerable<string> options, string name)
    {
        ArgumentNullException.ThrowIfNull(run);
        await using var p = ExternalProcess.Start(new ExternalProcessOptions(
            name, RepositoryLayout.DotnetHost, [SampleNetBackend.DllPath, "--print-capabilities", .. options], run.Directory, TimeSpan.FromSeconds(60))
        {
            Environment = { ["DOTNET_NOLOGO"] = "1", ["NO_COLOR"] = "1" },
        });
        var exited = await p.WaitForExitAsync(TimeSpan.FromSeconds(60)).ConfigureAwait(false);
        var stdout = p.ReadStdout();
        if (!exited || p.ExitCode != 0)
        {
            throw new InvalidOperationException(
                $"'{p.CommandLine}' failed (exit {p.ExitCode?.ToString(CultureInfo.InvariantCulture) ?? "none, timed out"}):\n{stdout}\n{p.ReadStderr()}");
        }

        var file = run.PathFor(name + ".json");
        await File.WriteAllTextAsync(file, stdout).ConfigureAwait(false);
        return (VhostCompat.Compat.CapabilityDocument.Parse(Encoding.UTF8.GetBytes(stdout), file), stdout.Trim());
    }

    private static async Task SetCapabilitiesAsync(QmpClient qmp, IEnumerable<(string Name, bool State)> caps, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(qmp);
        var list = new JsonArray();
        foreach (var (n, s) in caps)
        {
            list.Add(new JsonObject { ["capability"] = n, ["state"] = s });
        }

        await qmp.ExecuteAsync("migrate-set-capabilities", new JsonObject { ["capabilities"] = list }, cancellationToken).ConfigureAwait(false);
    }
}

/// <summary>
/// Compares guest RAM of the stopped source with the not-yet-resumed destination (started with -S): after a completed
/// precopy migration they must be identical, so any differing page is one whose last write was never sent - for a
/// vhost-user device, a write the backend made without marking it in the dirty log.
/// </summary>
public static class MigrationMemory
{
    public const int PageSize = 4096;

    /// <summary>Dumps guest-physical memory [0, size) of the QEMU behind <paramref name="qmpPath"/> with pmemsave.</summary>
    public static async Task DumpAsync(string qmpPath, long size, string file, TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        await using var qmp = await QmpClient.ConnectAsync(qmpPath, cts.Token).ConfigureAwait(false);
        await qmp.ExecuteAsync("pmemsave", new JsonObject { ["val"] = 0, ["size"] = size, ["filename"] = file }, cts.Token).ConfigureAwait(false);
    }

    /// <summary>Guest-physical addresses of the 4 KiB pages that differ between two dumps (and the count).</summary>
    public static (int Count, IReadOnlyList<long> First) DifferingPages(string a, string b, int keep = 16)
    {
        using var fa = File.OpenRead(a);
        using var fb = File.OpenRead(b);
        var ba = new byte[PageSize];
        var bb = new byte[PageSize];
        var first = new List<long>();
        var count = 0;
        long offset = 0;
        while (true)
        {
            var na = fa.ReadAtLeast(ba, PageSize, throwOnEndOfStream: false);
            var nb = fb.ReadAtLeast(bb, PageSize, throwOnEndOfStream: false);
            if (na == 0 && nb == 0)
            {
                break;
            }

            if (na != nb || !ba.AsSpan(0, na).SequenceEqual(bb.AsSpan(0, nb)))
            {
                count++;
                if (first.Count < keep)
                {
                    first.Add(offset);
                }
            }

            offset += PageSize;
        }

        return (count, first);
    }
}
