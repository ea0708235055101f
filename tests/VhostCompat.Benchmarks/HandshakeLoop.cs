using System.Diagnostics;
using System.Globalization;

namespace VhostCompat.Benchmarks;

/// <summary>
/// Runs the <see cref="HandshakeBenchmarks"/> operation in a plain loop (no BenchmarkDotNet), so a profiler
/// (perf with DOTNET_PerfMapEnabled=1) sees only the handshake. Prints min, median, p90 and process-wide
/// bytes allocated per handshake.
/// </summary>
internal static class HandshakeLoop
{
    /// <summary>Voluntary + involuntary context switches of every thread of this process so far.</summary>
    private static long ContextSwitches()
    {
        long n = 0;
        foreach (string task in Directory.EnumerateDirectories("/proc/self/task"))
        {
            try
            {
                foreach (string line in File.ReadLines(Path.Combine(task, "status")))
                {
                    if (line.StartsWith("voluntary_ctxt_switches:", StringComparison.Ordinal) || line.StartsWith("nonvoluntary_ctxt_switches:", StringComparison.Ordinal))
                    {
                        n += long.Parse(line.AsSpan(line.IndexOf(':', StringComparison.Ordinal) + 1).Trim(), CultureInfo.InvariantCulture);
                    }
                }
            }
            catch (IOException)
            {
                // the thread ended
            }
        }

        return n;
    }

    public static int Run(string[] args)
    {
        int iterations = args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 200;
        int queues = args.Length > 2 ? int.Parse(args[2], CultureInfo.InvariantCulture) : 32;
        bool ack = args.Length <= 3 || args[3] != "pipelined";
        var b = new HandshakeBenchmarks { Queues = queues, ReplyAck = ack };
        b.Setup();
        try
        {
            var times = new double[iterations];
            long bytes = 0;
            TimeSpan cpu = TimeSpan.Zero;
            long switches = 0;
            for (int i = -5; i < iterations; i++)
            {
                b.BeforeEach();
                long a0 = GC.GetTotalAllocatedBytes(precise: true);
                TimeSpan c0 = Process.GetCurrentProcess().TotalProcessorTime;
                long s0 = ContextSwitches();
                long t0 = Stopwatch.GetTimestamp();
                b.ConnectToAllRingsStarted().GetAwaiter().GetResult();
                double us = Stopwatch.GetElapsedTime(t0).TotalMicroseconds;
                long a1 = GC.GetTotalAllocatedBytes(precise: true);
                TimeSpan c1 = Process.GetCurrentProcess().TotalProcessorTime;
                long s1 = ContextSwitches();
                b.AfterEach();
                if (i >= 0)
                {
                    times[i] = us;
                    bytes += a1 - a0;
                    cpu += c1 - c0;
                    switches += s1 - s0;
                }
            }

            Array.Sort(times);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"handshake queues={queues} replyAck={ack} n={iterations}: min {times[0]:0} us, median {times[iterations / 2]:0} us, p90 {times[iterations * 9 / 10]:0} us, {bytes / iterations} B allocated, {cpu.TotalMicroseconds / iterations:0} us CPU (process, all threads), {(double)switches / iterations:0} context switches per handshake"));
            return 0;
        }
        finally
        {
            b.Cleanup();
        }
    }
}
