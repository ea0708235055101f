using VhostCompat.Queues;

namespace VhostCompat.Fuzz.Targets;

/// <summary>
/// What a device does with a queue: pop every chain, read all readable bytes, fill the writable
/// part, push (in pop order or reversed), then pop again. The only documented outcomes are chains,
/// "no chain" and a broken queue; <see cref="Virtqueue.Push"/> is called only with valid lengths,
/// so any exception is a crash. Oracles: lengths are never negative, a read or write never reports
/// more than the chain holds, pops are bounded, and nothing outside guest memory changes.
/// </summary>
internal static class RingExerciser
{
    private static readonly byte[] Scratch = new byte[4096];
    private static readonly byte[] Fill = CreateFill();

    /// <summary>Returns the number of chains popped (so a test can tell a seed that works from one rejected outright).</summary>
    public static int Run(Virtqueue q, FuzzRam ram, byte mode)
    {
        var popped = new List<DescriptorChain>();
        int total = 0;
        for (int round = 0; round < 2; round++)
        {
            popped.Clear();
            while (popped.Count < q.Size + 1 && q.TryPop(out var chain))
            {
                Use(chain, mode);
                popped.Add(chain);
            }

            total += popped.Count;
            if (popped.Count > q.Size)
            {
                throw new FuzzFailureException($"{popped.Count} chains in flight on a ring of {q.Size}");
            }

            if ((mode & 1) != 0)
            {
                popped.Reverse();
            }

            foreach (var c in popped)
            {
                int written = (mode & 2) != 0 ? c.WritableLength : c.WritableLength / 2;
                q.Push(c, written);
            }

            q.NotifyGuest();
            _ = q.PrepareToSleep();
            ram.CheckGuards();
        }

        return total;
    }

    private static void Use(DescriptorChain c, byte mode)
    {
        if (c.ReadableLength < 0 || c.WritableLength < 0)
        {
            throw new FuzzFailureException($"negative chain length {c.ReadableLength}/{c.WritableLength}");
        }

        int readable = Math.Min(c.ReadableLength, 1 << 16);
        int at = 0;
        while (at < readable)
        {
            int n = c.ReadReadable(at, Scratch.AsSpan(0, Math.Min(Scratch.Length, readable - at)));
            if (n <= 0)
            {
                throw new FuzzFailureException($"read returned {n} at {at} of {c.ReadableLength} readable bytes");
            }

            at += n;
        }

        if (c.ReadReadable(c.ReadableLength, Scratch) != 0)
        {
            throw new FuzzFailureException("read past the readable part returned data");
        }

        int offset = (mode & 4) != 0 ? Math.Min(c.WritableLength, 3) : 0;
        int w = c.WriteWritable(offset, Fill.AsSpan(0, Math.Min(Fill.Length, Math.Max(0, c.WritableLength - offset) + 8)));
        if (w > c.WritableLength - offset)
        {
            throw new FuzzFailureException($"wrote {w} bytes at {offset} into {c.WritableLength} writable bytes");
        }
    }

    private static byte[] CreateFill()
    {
        var b = new byte[FuzzRam.Size + 16];
        b.AsSpan().Fill(0xA7);
        return b;
    }
}
