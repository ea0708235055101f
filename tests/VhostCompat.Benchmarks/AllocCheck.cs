using System.Diagnostics;
using VhostCompat.Queues;

namespace VhostCompat.Benchmarks;

/// <summary>
/// Independent of BenchmarkDotNet: pops and pushes many chains of every shape after a warm-up and
/// reports the managed bytes this thread allocated per chain (GC.GetAllocatedBytesForCurrentThread)
/// and the GC count. Exit code 1 if any steady-state allocation is seen.
/// </summary>
internal static class AllocCheck
{
    public static int Run(long chains)
    {
        int failures = 0;
        var frame = new byte[2048];
        foreach (ChainShape shape in Enum.GetValues<ChainShape>())
        {
            using var ring = new SplitRing(256, shape);
            Virtqueue q = ring.Queue;
            long done = 0;
            void Pump(long count)
            {
                for (long i = 0; i < count; i += 32)
                {
                    ring.Publish(32);
                    while (q.TryPop(out DescriptorChain? c))
                    {
                        c.ReadReadable(0, frame.AsSpan(0, c.ReadableLength));
                        q.Push(c, 0);
                        done++;
                    }

                    q.NotifyGuest();
                }
            }

            Pump(1_000_000); // warm-up (tiered JIT reaches tier 1, OSR settles)
            done = 0;
            int gc0 = GC.CollectionCount(0);
            long before = GC.GetAllocatedBytesForCurrentThread();
            long t0 = Stopwatch.GetTimestamp();
            Pump(chains);
            TimeSpan elapsed = Stopwatch.GetElapsedTime(t0);
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            int gcs = GC.CollectionCount(0) - gc0;
            Console.WriteLine(
                $"alloc-check shape={shape,-9} chains={done} allocated_bytes={allocated} bytes_per_chain={(double)allocated / done:F4} gen0_gcs={gcs} ns_per_chain={elapsed.TotalNanoseconds / done:F1} broken={q.IsBroken}");
            if (allocated != 0 || q.IsBroken)
            {
                failures++;
            }
        }

        return failures == 0 ? 0 : 1;
    }
}
