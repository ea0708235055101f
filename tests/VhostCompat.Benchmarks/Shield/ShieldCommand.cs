using System.Globalization;
using System.Net.Sockets;
using System.Text;
using VhostCompat.Benchmarks.Soak;
using VhostCompat.Frontend;

namespace VhostCompat.Benchmarks.Shield;

/// <summary>
/// <c>shield --socket S --pid PID --type net|block [--proxy-pid P] [--cases a,b,…] [--label L]</c>: runs the
/// message-level hostile cases of <see cref="ShieldCases"/> against the vhost-user backend on S (directly or through
/// <c>vhost-compat proxy</c>) and judges each from outside: CRASH (process PID, or the proxy P, gone), HANG (a request
/// neither answered nor the connection closed within the bound), LEAK (fds or mappings of PID or P above the level
/// measured after a warm-up run of the same case, once the connections are closed), CORRUPT (a fresh well-formed
/// session, ring I/O included, fails afterwards). Prints one <c>CASE</c> line per case. Exit 0 when every case ran,
/// 3 when the backend died (the script restarts it and resumes after the last CASE line), 4 when the proxy died, 2 on bad arguments.
/// <c>shield --list</c> prints the case names; <c>shield --table LABEL=FILE …</c> prints the comparison table of saved outputs.
/// </summary>
internal static class ShieldCommand
{
    private static readonly TimeSpan StepTimeout = TimeSpan.FromSeconds(3), CaseTimeout = TimeSpan.FromSeconds(30), HealthyTimeout = TimeSpan.FromSeconds(5);

    public static async Task<int> RunAsync(string[] args)
    {
        var a = new Dictionary<string, string>(StringComparer.Ordinal);
        var tables = new List<string>();
        for (int i = 1; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--list":
                    Console.WriteLine(string.Join('\n', ShieldCases.All.Select(c => c.Name)));
                    return 0;
                case "--table":
                    tables.AddRange(args[(i + 1)..]);
                    i = args.Length;
                    break;
                case "--socket" or "--pid" or "--proxy-pid" or "--type" or "--cases" or "--label" when i + 1 < args.Length:
                    a[args[i]] = args[++i];
                    break;
                default:
                    Console.Error.WriteLine($"shield: unexpected argument '{args[i]}' (shield --socket S --pid PID --type net|block [--proxy-pid P] [--cases a,b] [--label L] | --list | --table LABEL=FILE...)");
                    return 2;
            }
        }

        if (tables.Count > 0)
        {
            return ShieldTable.Print(tables);
        }

        if (!a.TryGetValue("--socket", out string? socket) || !a.TryGetValue("--pid", out string? pidText) || !int.TryParse(pidText, CultureInfo.InvariantCulture, out int pid)
            || !a.TryGetValue("--type", out string? type) || type is not ("net" or "block"))
        {
            Console.Error.WriteLine("shield: --socket S, --pid PID and --type net|block are required");
            return 2;
        }

        int? proxyPid = a.TryGetValue("--proxy-pid", out string? pp) ? int.Parse(pp, CultureInfo.InvariantCulture) : null;
        string label = a.GetValueOrDefault("--label", type);
        var cases = ShieldCases.All.ToList();
        if (a.TryGetValue("--cases", out string? names))
        {
            var wanted = names.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if (wanted.FirstOrDefault(w => cases.All(c => c.Name != w)) is { } unknown)
            {
                Console.Error.WriteLine($"shield: unknown case '{unknown}' (shield --list)");
                return 2;
            }

            cases = cases.Where(c => wanted.Contains(c.Name)).ToList();
        }

        bool net = type == "net";
        Console.WriteLine($"shield label={label} type={type} socket={socket} pid={pid}{(proxyPid is { } x ? $" proxy-pid={x}" : "")} cases={cases.Count}");
        if (await ShieldHealthy.CheckAsync(socket, net, HealthyTimeout).ConfigureAwait(false) is { } first)
        {
            Console.Error.WriteLine($"shield: the well-formed session fails before any case: {first}");
            return 1;
        }

        // Warm-up: qemu-storage-daemon's coroutine pool keeps the stacks of up to ~64 finished client coroutines (2 mappings
        // each: 132 -> 260 over the first 64 connections, flat after that), so the process is measured only once it is full.
        for (int i = 0; i < 80; i++)
        {
            using var p = await ShieldContext.ConnectAsync(socket, StepTimeout).ConfigureAwait(false);
            _ = await p.RequestU64Async(Protocol.FrontendRequest.GetFeatures, default, false, StepTimeout).ConfigureAwait(false);
        }

        foreach (var sc in cases)
        {
            var verdict = await RunCaseAsync(sc, socket, net, pid, proxyPid).ConfigureAwait(false);
            Console.WriteLine(verdict.Line(sc));
            if (verdict.BackendDied)
            {
                return 3;
            }

            if (verdict.ProxyDied)
            {
                return 4;
            }
        }

        return 0;
    }

    private static async Task<Verdict> RunCaseAsync(ShieldCase sc, string socket, bool net, int pid, int? proxyPid)
    {
        var v = new Verdict();

        // One warm-up run first, so what a case creates once (a lazily allocated queue pair, code the JIT compiles) is
        // not counted as a leak; then Repeat runs, and the process must be back where it was after the warm-up.
        v.Response = await OnceAsync(sc, socket, net).ConfigureAwait(false);
        if (Died(v, pid, proxyPid))
        {
            return v;
        }

        var before = await SettledAsync(pid, null).ConfigureAwait(false);
        var proxyBefore = proxyPid is { } p0 ? await SettledAsync(p0, null).ConfigureAwait(false) : default;
        var responses = new HashSet<string> { v.Response };
        for (int r = 0; r < sc.Repeat; r++)
        {
            responses.Add(await OnceAsync(sc, socket, net).ConfigureAwait(false));
            if (Died(v, pid, proxyPid))
            {
                return v;
            }
        }

        if (responses.Count > 1)
        {
            v.Notes.Add("responses differ between runs: " + string.Join(" / ", responses));
        }

        v.Hang = responses.Any(r => r.Contains("hung", StringComparison.Ordinal) || r.Contains("no-ack", StringComparison.Ordinal));
        var after = await SettledAsync(pid, before.Fds).ConfigureAwait(false);
        Leak(v, "backend", before, after, Math.Max(sc.Repeat, 2));
        if (proxyPid is { } p1)
        {
            var proxyAfter = await SettledAsync(p1, proxyBefore.Fds).ConfigureAwait(false);
            Leak(v, "proxy", proxyBefore, proxyAfter, 16); // .NET: tiered JIT and GC segments add a few mappings at any time
        }

        // Corruption: a fresh well-formed session must still work (one retry, a second later, for a slow teardown).
        string? health = await ShieldHealthy.CheckAsync(socket, net, HealthyTimeout).ConfigureAwait(false);
        if (health is not null && !Died(v, pid, proxyPid))
        {
            await Task.Delay(1000).ConfigureAwait(false);
            string? again = await ShieldHealthy.CheckAsync(socket, net, HealthyTimeout).ConfigureAwait(false);
            v.Notes.Add(again is null ? $"well-formed session failed once ({health}), worked a second later" : $"well-formed session fails: {again}");
            v.Corrupt = again is not null;
        }

        Died(v, pid, proxyPid);
        return v;
    }

    private static async Task<string> OnceAsync(ShieldCase sc, string socket, bool net)
    {
        using var bag = new FdBag();
        try
        {
            return await sc.Run(new ShieldContext(socket, net, bag, StepTimeout)).WaitAsync(CaseTimeout).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            return "hung (case timeout)";
        }
        catch (Exception ex) when (ex is IOException or SocketException or VhostUserRequestException or OperationCanceledException or InvalidOperationException)
        {
            return $"error: {ex.GetType().Name}: {ex.Message}";
        }
    }

    private static bool Died(Verdict v, int pid, int? proxyPid)
    {
        // A crash shows a moment after the input (the backend acts on the message after the case has moved on).
        Thread.Sleep(100);
        v.BackendDied |= !ProcStats.IsAlive(pid);
        v.ProxyDied |= proxyPid is { } p && !ProcStats.IsAlive(p);
        return v.BackendDied || v.ProxyDied;
    }

    private static void Leak(Verdict v, string who, ProcSample before, ProcSample after, int mapsTolerance)
    {
        v.Measured.Add(string.Create(CultureInfo.InvariantCulture,
            $"{who} fds {before.Fds}->{after.Fds} maps {before.Maps}->{after.Maps} guest-maps {after.GuestMaps} rss {before.RssKiB}->{after.RssKiB} KiB"));
        if (after.Fds > before.Fds)
        {
            v.Leaks.Add($"{who} +{after.Fds - before.Fds} fds");
        }

        if (after.GuestMaps > 0)
        {
            v.Leaks.Add($"{who} keeps {after.GuestMaps} guest mappings after the close");
        }

        if (after.Maps - before.Maps >= mapsTolerance)
        {
            v.Leaks.Add($"{who} +{after.Maps - before.Maps} mappings");
        }
    }

    /// <summary>A reading once the last connection's teardown is over: guest memory unmapped and fds back to <paramref name="fdBaseline"/>, or 3 s passed.</summary>
    private static async Task<ProcSample> SettledAsync(int pid, int? fdBaseline)
    {
        var deadline = DateTime.UtcNow + StepTimeout;
        while (DateTime.UtcNow < deadline && ProcStats.IsAlive(pid) && (ProcStats.GuestMaps(pid) > 0 || (fdBaseline is int b && ProcStats.Fds(pid).Other > b)))
        {
            await Task.Delay(10).ConfigureAwait(false);
        }

        await Task.Delay(50).ConfigureAwait(false);
        return ProcStats.IsAlive(pid) ? ProcStats.Read(pid, 0, 0) : default;
    }

    private sealed class Verdict
    {
        public string Response { get; set; } = "";

        public bool BackendDied { get; set; }

        public bool ProxyDied { get; set; }

        public bool Hang { get; set; }

        public bool Corrupt { get; set; }

        public List<string> Leaks { get; } = [];

        public List<string> Notes { get; } = [];

        public List<string> Measured { get; } = [];

        public string Outcome
        {
            get
            {
                var o = new List<string>();
                if (BackendDied)
                {
                    o.Add("CRASH");
                }

                if (ProxyDied)
                {
                    o.Add("PROXY-CRASH");
                }

                if (Hang)
                {
                    o.Add("HANG");
                }

                if (Leaks.Count > 0)
                {
                    o.Add("LEAK");
                }

                if (Corrupt)
                {
                    o.Add("CORRUPT");
                }

                return o.Count == 0 ? "ok" : string.Join('+', o);
            }
        }

        // CASE <name> | <ids> | <outcome> | <response> | <details>
        public string Line(ShieldCase sc)
        {
            var details = new StringBuilder();
            details.AppendJoin("; ", Leaks.Concat(Notes).Concat(Measured));
            return $"CASE {sc.Name} | {sc.Ids} | {Outcome} | {Response.Replace('|', '/')} | {details.ToString().Replace('|', '/')}";
        }
    }
}
