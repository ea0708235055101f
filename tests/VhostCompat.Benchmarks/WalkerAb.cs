using System.Diagnostics;
using VhostCompat.Queues;

namespace VhostCompat.Benchmarks;

/// <summary>
/// <c>walker-ab [rounds]</c>: the SDK walker and <see cref="LeanSplitQueue"/> alternately, 200k chains per
/// slice, many slices; prints the MINIMUM and median ns per chain of each (the minimum is the figure least
/// disturbed by other load on a shared machine). Same process, same ring memory layout, bursts of 32.
/// </summary>
internal static class WalkerAb
{
    public static int Run(int rounds)
    {
        const int slice = 200_000;
        foreach (ChainShape shape in Enum.GetValues<ChainShape>())
        {
            using var sdkRing = new SplitRing(256, shape);
            Virtqueue sdk = sdkRing.Queue;
            // lean = all three changes; the others put back one SDK behaviour each (ablation).
            string[] names = ["lean", "lean+modulo", "lean+delegate", "lean+publish_per_chain"];
            var rings = names.Select(_ => new SplitRing(256, shape)).ToArray();
            LeanSplitQueue[] leans =
            [
                new(rings[0]),
                new(rings[1], modulo: true),
                new(rings[2], delegateTranslate: true),
                new(rings[3], publishPerChain: true),
            ];
            var times = new List<double>[names.Length + 1];
            for (int i = 0; i < times.Length; i++)
            {
                times[i] = [];
            }

            for (int r = -3; r < rounds; r++)
            {
                double t = SdkSlice(sdkRing, sdk, slice);
                if (r >= 0)
                {
                    times[0].Add(t);
                }

                for (int i = 0; i < leans.Length; i++)
                {
                    t = LeanSlice(rings[i], leans[i], slice);
                    if (r >= 0)
                    {
                        times[i + 1].Add(t);
                    }
                }
            }

            foreach (var l in times)
            {
                l.Sort();
            }

            var line = new System.Text.StringBuilder(FormattableString.Invariant($"walker-ab shape={shape,-9} sdk_min_ns={times[0][0]:F1} (median {times[0][times[0].Count / 2]:F1})"));
            for (int i = 0; i < names.Length; i++)
            {
                line.Append(FormattableString.Invariant($" {names[i]}_min_ns={times[i + 1][0]:F1} (median {times[i + 1][times[i + 1].Count / 2]:F1})"));
            }

            line.Append(FormattableString.Invariant($" speedup_min={times[0][0] / times[1][0]:F2} broken={sdk.IsBroken || leans.Any(l => l.BrokenReason is not null)}"));
            Console.WriteLine(line.ToString());
            foreach (var ring in rings)
            {
                ring.Dispose();
            }
        }

        return 0;
    }

    private static double SdkSlice(SplitRing ring, Virtqueue q, int chains)
    {
        long t0 = Stopwatch.GetTimestamp();
        for (int i = 0; i < chains; i += 32)
        {
            ring.Publish(32);
            q.SetHandlerPass(true); // as the worker runs a device handler
            while (q.TryPop(out DescriptorChain? c))
            {
                q.Push(c, 0);
            }

            q.SetHandlerPass(false);
            q.NotifyGuest();
        }

        return Stopwatch.GetElapsedTime(t0).TotalNanoseconds / chains;
    }

    private static double LeanSlice(SplitRing ring, LeanSplitQueue q, int chains)
    {
        long t0 = Stopwatch.GetTimestamp();
        for (int i = 0; i < chains; i += 32)
        {
            ring.Publish(32);
            while (q.TryPop(out DescriptorChain? c))
            {
                q.Push(c, 0);
            }

            q.Flush();
        }

        return Stopwatch.GetElapsedTime(t0).TotalNanoseconds / chains;
    }
}
