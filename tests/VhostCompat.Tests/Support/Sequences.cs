using System.Buffers;

namespace VhostCompat.Tests.Support;

/// <summary>Builds multi-segment <see cref="ReadOnlySequence{T}"/> values for framing tests.</summary>
internal static class Sequences
{
    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory, RunningIndex + Memory.Length);
            Next = next;
            return next;
        }
    }

    /// <summary>A sequence whose segments hold the given chunks in order (each chunk copied).</summary>
    public static ReadOnlySequence<byte> FromChunks(params byte[][] chunks)
    {
        if (chunks.Length == 0)
        {
            return ReadOnlySequence<byte>.Empty;
        }

        var first = new Segment(chunks[0].ToArray(), 0);
        Segment last = first;
        for (int i = 1; i < chunks.Length; i++)
        {
            last = last.Append(chunks[i].ToArray());
        }

        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
    }

    /// <summary>Splits <paramref name="bytes"/> at the given ascending positions.</summary>
    public static ReadOnlySequence<byte> SplitAt(byte[] bytes, params int[] positions)
    {
        var chunks = new List<byte[]>();
        int start = 0;
        foreach (int p in positions)
        {
            chunks.Add(bytes[start..p]);
            start = p;
        }

        chunks.Add(bytes[start..]);
        return FromChunks([.. chunks]);
    }

    /// <summary>One segment per byte.</summary>
    public static ReadOnlySequence<byte> OneBytePerSegment(byte[] bytes) =>
        FromChunks([.. bytes.Select(b => new[] { b })]);
}
