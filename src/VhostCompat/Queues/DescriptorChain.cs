using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;

namespace VhostCompat.Queues;

/// <summary>
/// One buffer the driver made available: its device-readable part followed by its device-writable
/// part, already validated and translated into this process's mapping of guest memory. Chain
/// objects are pooled per queue (one per head index), so popping allocates nothing in steady state;
/// a chain is valid until it is pushed back with <see cref="Virtqueue.Push"/>.
/// </summary>
public sealed class DescriptorChain
{
    private Segment[] _segments = new Segment[8];
    private int _count;

    private readonly Virtqueue _owner;

    internal DescriptorChain(Virtqueue owner) => _owner = owner;

    /// <summary>Index of the chain's head descriptor (the id reported in the used ring).</summary>
    public ushort Head { get; internal set; }

    /// <summary>Total bytes the device may read.</summary>
    public int ReadableLength { get; private set; }

    /// <summary>Total bytes the device may write.</summary>
    public int WritableLength { get; private set; }

    /// <summary>
    /// True when the chain was taken from the ring by an earlier backend process (or connection) that
    /// did not complete it: with inflight tracking (INFLIGHT_SHMFD) the SDK hands such chains out again,
    /// in their original fetch order, before any new one. Devices whose requests are not idempotent can
    /// use it to decide what to redo; block writes and reads are simply executed again.
    /// </summary>
    public bool IsResubmitted { get; internal set; }

    /// <summary>Packed rings: how many descriptor slots the chain occupied.</summary>
    internal int DescriptorSlots { get; set; }

    /// <summary>Packed rings with inflight tracking: the inflight entry that heads the chain's record.</summary>
    internal int InflightEntry { get; set; }

    internal bool InFlight { get; set; }

    /// <summary>The memory table the chain's addresses were translated against (kept mapped while it is in flight).</summary>
    internal Memory.GuestMemoryTable? Table { get; set; }


    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Reset()
    {
        _count = 0;
        ReadableLength = 0;
        WritableLength = 0;
        DescriptorSlots = 0;
        IsResubmitted = false;
        InflightEntry = -1;
    }

    /// <summary>Adds a translated piece; returns false if the totals would overflow.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool Add(nint address, ulong gpa, ulong length, bool writable)
    {
        if (length == 0)
        {
            return true;
        }

        long total = (long)(writable ? WritableLength : ReadableLength) + (long)length;
        if (length > int.MaxValue || total > int.MaxValue)
        {
            return false;
        }

        Segment[] segments = _segments;
        int count = _count;
        if ((uint)count >= (uint)segments.Length)
        {
            segments = Grow();
        }

        if (count == 0)
        {
            // The driver wrote this buffer on another core: start fetching it while the walk goes on (and, for a
            // device that pops a burst before touching the data, while the other chains are walked).
            Prefetch(address, length);
        }

        segments[count] = new Segment(address, gpa, (int)length, writable);
        _count = count + 1;
        if (writable)
        {
            WritableLength = (int)total;
        }
        else
        {
            ReadableLength = (int)total;
        }

        return true;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Prefetch(nint address, ulong length)
    {
        if (Sse.IsSupported)
        {
            Sse.Prefetch0((void*)address);
            if ((ulong)(address & 63) + length > 64)
            {
                Sse.Prefetch0((void*)(address + 64));
            }
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private Segment[] Grow()
    {
        Array.Resize(ref _segments, _segments.Length * 2);
        return _segments;
    }

    /// <summary>Copies device-readable bytes, starting <paramref name="offset"/> bytes into the readable part, into <paramref name="destination"/>. Returns the number copied.</summary>
    public unsafe int ReadReadable(int offset, Span<byte> destination)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        int copied = 0;
        int skip = offset;
        for (int i = 0; i < _count && copied < destination.Length; i++)
        {
            ref readonly Segment s = ref _segments[i];
            if (s.Writable)
            {
                break;
            }

            if (skip >= s.Length)
            {
                skip -= s.Length;
                continue;
            }

            int n = Math.Min(s.Length - skip, destination.Length - copied);
            new ReadOnlySpan<byte>((byte*)s.Address + skip, n).CopyTo(destination.Slice(copied, n));
            copied += n;
            skip = 0;
        }

        return copied;
    }

    /// <summary>Copies <paramref name="source"/> into the device-writable part, starting <paramref name="offset"/> bytes into it. Returns the number written (never beyond the writable part).</summary>
    public unsafe int WriteWritable(int offset, ReadOnlySpan<byte> source)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        int written = 0;
        int skip = offset;
        for (int i = 0; i < _count && written < source.Length; i++)
        {
            ref readonly Segment s = ref _segments[i];
            if (!s.Writable)
            {
                continue;
            }

            if (skip >= s.Length)
            {
                skip -= s.Length;
                continue;
            }

            int n = Math.Min(s.Length - skip, source.Length - written);
            source.Slice(written, n).CopyTo(new Span<byte>((byte*)s.Address + skip, n));
            // The queue's log at the time of the write, not of the pop: a chain held across the start of a migration
            // (or a log replacement) is marked in the log that is current when its bytes land.
            _owner.MarkDirty(s.GuestPhysicalAddress + (ulong)skip, (ulong)n);
            written += n;
            skip = 0;
        }

        return written;
    }

    /// <summary>How many separate guest buffers make up the device-writable part, in chain order (for vectored I/O).</summary>
    public int WritableSegmentCount
    {
        get
        {
            int n = 0;
            for (int i = 0; i < _count; i++)
            {
                n += _segments[i].Writable ? 1 : 0;
            }

            return n;
        }
    }

    /// <summary>
    /// The <paramref name="index"/>-th device-writable guest buffer, in chain order, as a span over guest memory, so
    /// a device can read a file straight into it (one <c>preadv</c> over all of them) instead of copying through
    /// <see cref="WriteWritable"/>. The span is valid only until the chain is pushed, and only on the queue's worker
    /// thread (after a push or a queue stop the memory may be unmapped). The whole buffer is marked dirty in the
    /// migration log when it is handed out, whatever the device then writes into it.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is negative or not below <see cref="WritableSegmentCount"/>.</exception>
    public unsafe Span<byte> GetWritableSegment(int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        int seen = 0;
        for (int i = 0; i < _count; i++)
        {
            ref readonly Segment s = ref _segments[i];
            if (s.Writable && seen++ == index)
            {
                _owner.MarkDirty(s.GuestPhysicalAddress, (ulong)s.Length);
                return new Span<byte>((byte*)s.Address, s.Length);
            }
        }

        throw new ArgumentOutOfRangeException(nameof(index), $"{index} not below {seen} writable segments");
    }

    private readonly record struct Segment(nint Address, ulong GuestPhysicalAddress, int Length, bool Writable);
}
