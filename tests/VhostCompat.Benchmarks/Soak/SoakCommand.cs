using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using VhostCompat.Frontend;

namespace VhostCompat.Benchmarks.Soak;

/// <summary>
/// <c>soak --socket-path P --pid N --device net|block|rng [--cycles 10000] [--warmup 2000] [--sample-every 1000]
/// [--seed 15] [--max-seconds 1800]</c>: connect → misbehave → close, <c>--cycles</c> times, against a sample
/// process already listening on P, with the cases of <see cref="MessageCases"/> and <see cref="SessionCases"/>
/// mixed by a seeded random source. Measures process N from outside (/proc/N) and exits 1 on a leak, a crash,
/// a hang or a failed final health check; 2 on bad arguments.
/// </summary>
internal static class SoakCommand
{
    private const int MaxUnreleased = 10;
    private static readonly TimeSpan StepTimeout = TimeSpan.FromSeconds(3), CycleTimeout = TimeSpan.FromSeconds(20);

    public static async Task<int> RunAsync(string[] args)
    {
        if (Options.Parse(args) is not { } o)
        {
            return 2;
        }

        SoakCase[] cases = [.. MessageCases.All(), .. SessionCases.All()];
        var counts = cases.ToDictionary(c => c.Name, _ => new int[Enum.GetValues<PeerOutcome>().Length]);
        var random = new Random(o.Seed);
        var clock = Stopwatch.StartNew();
        var notes = new List<string>();
        Console.WriteLine($"soak device={o.Device.ToString().ToLowerInvariant()} pid={o.Pid} cycles={o.Cycles} warmup={o.Warmup} seed={o.Seed} cases={cases.Length}: {string.Join(' ', cases.Select(c => c.Name))}");

        string? first = await HealthySession.CheckAsync(o.SocketPath, o.Device, StepTimeout).ConfigureAwait(false);
        if (first is not null)
        {
            Console.Error.WriteLine($"the healthy session fails before the soak starts: {first}");
            return 1;
        }

        ProcSample start = await SettledAsync(o.Pid, 0, clock, null).ConfigureAwait(false);
        Console.WriteLine($"start  {start}");
        ProcSample warm = start;
        var samples = new List<ProcSample> { start };
        int guestNotReleased = 0, done = 0;
        bool died = false, overTime = false, stopEarly = false;
        if (start.GuestMaps > 0)
        {
            // Already the first healthy session left its memory mapped: every cycle would wait for it.
            guestNotReleased = 1;
            stopEarly = true;
            Note(notes, $"{start.GuestMaps} guest mappings still present after the first healthy session; not starting the cycles");
        }

        for (int cycle = 1; cycle <= o.Cycles && !stopEarly; cycle++)
        {
            if (clock.Elapsed.TotalSeconds > o.MaxSeconds)
            {
                overTime = true;
                break;
            }

            SoakCase sc = cases[random.Next(cases.Length)];
            PeerOutcome outcome;
            using (var bag = new FdBag())
            {
                try
                {
                    outcome = await sc.Run(new CaseContext(o.SocketPath, o.Device, random, bag, StepTimeout)).WaitAsync(CycleTimeout).ConfigureAwait(false);
                }
                catch (TimeoutException)
                {
                    outcome = PeerOutcome.Hung;
                }
                catch (Exception ex) when (ex is IOException or SocketException or VhostUserRequestException or OperationCanceledException or InvalidOperationException)
                {
                    outcome = PeerOutcome.Failed;
                    Note(notes, $"cycle {cycle} {sc.Name}: {ex.GetType().Name}: {ex.Message}");
                }
            }

            counts[sc.Name][(int)outcome]++;
            if (outcome is PeerOutcome.Hung)
            {
                Note(notes, $"cycle {cycle} {sc.Name}: no reply and no close within {StepTimeout.TotalSeconds:0} s");
            }

            if (!ProcStats.IsAlive(o.Pid))
            {
                died = true;
                Note(notes, $"cycle {cycle} {sc.Name}: the process is gone");
                break;
            }

            // Between sessions the backend must hold no guest memory at all.
            if (!await GuestReleasedAsync(o.Pid).ConfigureAwait(false))
            {
                guestNotReleased++;
                Note(notes, $"cycle {cycle} {sc.Name}: {ProcStats.GuestMaps(o.Pid)} guest mappings still present {StepTimeout.TotalSeconds:0} s after the close");
                if (guestNotReleased >= MaxUnreleased)
                {
                    Note(notes, $"stopped after {MaxUnreleased} sessions whose guest memory stayed mapped (every further cycle would wait {StepTimeout.TotalSeconds:0} s)");
                    done = cycle;
                    break;
                }
            }

            done = cycle;
            if (cycle == o.Warmup || cycle % o.SampleEvery == 0 || cycle == o.Cycles)
            {
                ProcSample s = await SettledAsync(o.Pid, cycle, clock, cycle > o.Warmup ? warm.Fds : start.Fds).ConfigureAwait(false);
                samples.Add(s);
                if (cycle == o.Warmup)
                {
                    warm = s;
                }

                Console.WriteLine($"{(cycle == o.Warmup ? "warm " : "sample")} {s}");
            }
        }

        if (!died && samples[^1].Cycle != done)
        {
            samples.Add(await SettledAsync(o.Pid, done, clock, warm.Fds).ConfigureAwait(false));
            Console.WriteLine($"end    {samples[^1]}");
        }

        string? last = died ? "process gone" : await HealthySession.CheckAsync(o.SocketPath, o.Device, StepTimeout).ConfigureAwait(false);
        return Report(o, cases, counts, samples, warm, done, guestNotReleased, died, overTime, last, notes, clock.Elapsed);
    }

    private static int Report(Options o, SoakCase[] cases, Dictionary<string, int[]> counts, List<ProcSample> samples, ProcSample warm, int done,
        int guestNotReleased, bool died, bool overTime, string? lastHealth, List<string> notes, TimeSpan elapsed)
    {
        var inv = CultureInfo.InvariantCulture;
        Console.WriteLine("case                       group    synced closed abandoned hung failed");
        foreach (var c in cases)
        {
            int[] n = counts[c.Name];
            Console.WriteLine(string.Create(inv, $"{c.Name,-26} {c.Group,-8} {n[0],6} {n[1],6} {n[3],9} {n[2],4} {n[4],6}"));
        }

        foreach (string note in notes)
        {
            Console.WriteLine($"note: {note}");
        }

        ProcSample end = samples[^1];
        var after = samples.Where(s => s.Cycle >= warm.Cycle).ToList();
        long rssTolerance = Math.Max(8 * 1024, warm.RssKiB / 10);
        int hung = counts.Values.Sum(n => n[(int)PeerOutcome.Hung]), failed = counts.Values.Sum(n => n[(int)PeerOutcome.Failed]);
        var failures = new List<string>();
        Check(failures, !died, "the process died");
        Check(failures, !overTime, $"--max-seconds {o.MaxSeconds} reached after {done} cycles");
        Check(failures, end.Fds <= warm.Fds, $"fd count grew after warm-up: {warm.Fds} -> {end.Fds}");
        Check(failures, guestNotReleased == 0 && end.GuestMaps == 0, $"guest memory still mapped after {guestNotReleased} session(s) ({end.GuestMaps} guest mappings at the end)");
        Check(failures, end.OtherMaps - warm.OtherMaps <= o.MapsTolerance, $"non-guest mappings grew after warm-up: {warm.OtherMaps} -> {end.OtherMaps} (tolerance {o.MapsTolerance})");
        Check(failures, end.RssKiB - warm.RssKiB <= rssTolerance, $"RSS grew after warm-up: {warm.RssKiB} -> {end.RssKiB} KiB (tolerance {rssTolerance} KiB)");
        Check(failures, hung == 0, $"{hung} cycles left the frontend waiting");
        Check(failures, failed == 0, $"{failed} cycles failed a step that should work");
        Check(failures, lastHealth is null, $"the final healthy session failed: {lastHealth}");
        Console.WriteLine(string.Create(inv, $"rss slope after warm-up: {RssSlope(after):0} KiB per 1000 cycles (least squares over {after.Count} samples)"));
        Console.WriteLine(string.Create(inv,
            $"RESULT device={o.Device.ToString().ToLowerInvariant()} cycles={done} seconds={elapsed.TotalSeconds:0.0} fds_warm={warm.Fds} fds_end={end.Fds} fds_max_after_warm={after.Max(s => s.Fds)} " +
            $"guest_maps_end={end.GuestMaps} guest_not_released={guestNotReleased} maps_warm={warm.Maps} maps_end={end.Maps} other_maps_warm={warm.OtherMaps} other_maps_end={end.OtherMaps} " +
            $"rss_start_kib={samples[0].RssKiB} rss_warm_kib={warm.RssKiB} rss_end_kib={end.RssKiB} rss_max_after_warm_kib={after.Max(s => s.RssKiB)} rss_tolerance_kib={rssTolerance} " +
            $"threads_warm={warm.Threads} threads_end={end.Threads} hung={hung} failed={failed} healthy_at_end={(lastHealth is null ? "yes" : "no")} verdict={(failures.Count == 0 ? "PASS" : "FAIL")}"));
        foreach (string f in failures)
        {
            Console.WriteLine($"FAIL: {f}");
        }

        return failures.Count == 0 ? 0 : 1;
    }

    /// <summary>Least-squares slope of RSS against cycles, in KiB per 1000 cycles (0 with fewer than two samples).</summary>
    private static double RssSlope(List<ProcSample> samples)
    {
        if (samples.Count < 2)
        {
            return 0;
        }

        double mx = samples.Average(s => (double)s.Cycle), my = samples.Average(s => (double)s.RssKiB);
        double sxy = samples.Sum(s => (s.Cycle - mx) * (s.RssKiB - my)), sxx = samples.Sum(s => (s.Cycle - mx) * (s.Cycle - mx));
        return sxx == 0 ? 0 : 1000 * sxy / sxx;
    }

    private static void Check(List<string> failures, bool ok, string message)
    {
        if (!ok)
        {
            failures.Add(message);
        }
    }

    private static void Note(List<string> notes, string note)
    {
        if (notes.Count < 20)
        {
            notes.Add(note);
        }
    }

    private static async Task<bool> GuestReleasedAsync(int pid)
    {
        var deadline = DateTime.UtcNow + StepTimeout;
        while (ProcStats.GuestMaps(pid) > 0)
        {
            if (DateTime.UtcNow > deadline || !ProcStats.IsAlive(pid))
            {
                return false;
            }

            await Task.Delay(1).ConfigureAwait(false);
        }

        return true;
    }

    /// <summary>A sample taken once the last session's teardown is over: guest memory gone and (if given) fds back to the baseline or 3 s passed.</summary>
    private static async Task<ProcSample> SettledAsync(int pid, int cycle, Stopwatch clock, int? fdBaseline)
    {
        await GuestReleasedAsync(pid).ConfigureAwait(false);
        var deadline = DateTime.UtcNow + StepTimeout;
        while (fdBaseline is int b && ProcStats.Fds(pid).Other > b && DateTime.UtcNow < deadline)
        {
            await Task.Delay(10).ConfigureAwait(false);
        }

        return ProcStats.Read(pid, cycle, clock.Elapsed.TotalSeconds);
    }
}
