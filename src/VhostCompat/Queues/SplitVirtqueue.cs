using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using VhostCompat.Memory;

namespace VhostCompat.Queues;

/// <summary>A split virtqueue: descriptor table, available ring (driver), used ring (device).</summary>
internal sealed unsafe class SplitVirtqueue : Virtqueue
{
    private readonly int _mask;
    private readonly ulong _descAddress;
    private readonly ulong _availAddress;
    private readonly ulong _usedAddress;
    private byte* _desc;
    private byte* _avail;
    private byte* _used;
    private ushort _lastAvail;
    private ushort _usedIndex;
    private ushort _signalledUsed;
    private bool _pendingSignal;
    private SplitInflight? _inflight;
    private ushort[] _resubmit = [];
    private int _resubmitNext;

    public SplitVirtqueue(int index, int size, GuestMemoryTable memory, ulong desc, ulong avail, ulong used, ushort nextAvail, bool indirect, bool eventIndex)
        : base(index, size, memory, indirect, eventIndex)
    {
        if (size <= 0 || (size & (size - 1)) != 0)
        {
            throw new ArgumentException($"queue {index}: split ring size {size} is not a power of two");
        }

        _mask = size - 1;
        _descAddress = desc;
        _availAddress = avail;
        _usedAddress = used;
        _lastAvail = nextAvail;
        if (Translate(memory) is { } error)
        {
            throw new ArgumentException(error);
        }

        _usedIndex = Volatile.Read(ref *(ushort*)(_used + 2));
        _publishedUsed = _usedIndex;
        _signalledUsed = _usedIndex;
    }

    internal override uint Base => _lastAvail;

    internal override int PendingResubmissions => _resubmit.Length - _resubmitNext;

    internal override string? AttachInflight(nint region, int capacity)
    {
        SplitInflight? tracker = SplitInflight.Open(region, capacity, Size, _usedIndex, out ushort[] resubmit, out string error);
        if (tracker is null)
        {
            return $"queue {Index}: {error}";
        }

        _inflight = tracker;
        _resubmit = resubmit;
        _resubmitNext = 0;

        // Every chain taken from the avail ring is either in the used ring or still in flight.
        _lastAvail = (ushort)(_usedIndex + resubmit.Length);
        return null;
    }

    internal override string? Translate(GuestMemoryTable table)
    {
        if (!table.TryTranslateFrontendVirtual(_descAddress, (ulong)Size * VirtqueueLayout.DescriptorSize, out nint d)
            || !table.TryTranslateFrontendVirtual(_availAddress, VirtqueueLayout.SplitAvailBytes(Size), out nint a)
            || !table.TryTranslateFrontendVirtual(_usedAddress, VirtqueueLayout.SplitUsedBytes(Size), out nint u))
        {
            return $"queue {Index}: ring structures are not inside guest memory";
        }

        _desc = (byte*)d;
        _avail = (byte*)a;
        _used = (byte*)u;
        return null;
    }

    private ushort AvailIndex => Volatile.Read(ref *(ushort*)(_avail + 2));

    private protected override bool PopCore([NotNullWhen(true)] out DescriptorChain? chain)
    {
        chain = null;
        if (_resubmitNext < _resubmit.Length)
        {
            return Resubmit(out chain);
        }

        ushort availIndex = AvailIndex; // acquire: ring entries are read after the index
        ushort pending = (ushort)(availIndex - _lastAvail);
        if (pending == 0)
        {
            return false;
        }

        if (pending > Size)
        {
            return BreakAvailIndex(availIndex, pending);
        }

        ushort head = Unsafe.ReadUnaligned<ushort>(_avail + 4 + (2 * (_lastAvail & _mask)));
        if (head >= Size)
        {
            return BreakHead(head);
        }

        if (!Take(head, resubmitted: false, out chain))
        {
            return false;
        }

        _lastAvail++;
        _inflight?.Popped(head);
        return true;
    }

    /// <summary>Hands out the next chain an earlier backend left in flight (inflight tracking).</summary>
    private bool Resubmit([NotNullWhen(true)] out DescriptorChain? chain)
    {
        if (!Take(_resubmit[_resubmitNext], resubmitted: true, out chain))
        {
            return false;
        }

        _resubmitNext++;
        return true;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool Take(ushort head, bool resubmitted, [NotNullWhen(true)] out DescriptorChain? chain)
    {
        chain = null;
        DescriptorChain c = ChainFor(head);
        if (c.InFlight)
        {
            return BreakInFlight(head, resubmitted);
        }

        c.Reset();
        c.Head = head;
        if (!Walk(c, head))
        {
            return false;
        }

        c.IsResubmitted = resubmitted;
        c.InFlight = true;
        chain = c;
        return true;
    }

    private bool Walk(DescriptorChain chain, ushort head)
    {
        byte* table = _desc;
        int tableSize = Size;
        int index = head;
        int count = 0;
        int buffers = 0;
        bool indirect = false;
        bool sawWritable = false;
        while (true)
        {
            if (++count > tableSize)
            {
                return BreakWalk(WalkError.Loop, head, tableSize, 0, 0);
            }

            byte* d = table + (index * VirtqueueLayout.DescriptorSize);
            ulong addr = Unsafe.ReadUnaligned<ulong>(d);
            uint len = Unsafe.ReadUnaligned<uint>(d + 8);
            ushort flags = Unsafe.ReadUnaligned<ushort>(d + 12);
            ushort next = Unsafe.ReadUnaligned<ushort>(d + 14);
            if ((flags & VirtqueueLayout.DescFlagIndirect) != 0)
            {
                if (indirect)
                {
                    return BreakWalk(WalkError.NestedIndirect, head, 0, 0, 0);
                }

                if (!Indirect)
                {
                    return BreakWalk(WalkError.IndirectNotNegotiated, head, 0, 0, 0);
                }

                if ((flags & VirtqueueLayout.DescFlagNext) != 0)
                {
                    return BreakWalk(WalkError.IndirectWithNext, head, 0, 0, 0);
                }

                if (len == 0 || len % VirtqueueLayout.DescriptorSize != 0 || len / VirtqueueLayout.DescriptorSize > (uint)Size)
                {
                    return BreakWalk(WalkError.IndirectLength, head, 0, 0, len);
                }

                if (!TryLocateIndirectTable(addr, len, out byte* t))
                {
                    return BreakWalk(WalkError.IndirectOutside, head, 0, addr, len);
                }

                table = t;
                tableSize = (int)(len / VirtqueueLayout.DescriptorSize);
                indirect = true;
                index = 0;
                count = 0;
                continue;
            }

            bool writable = (flags & VirtqueueLayout.DescFlagWrite) != 0;
            if (!writable && sawWritable)
            {
                return BreakWalk(WalkError.ReadableAfterWritable, head, 0, 0, 0);
            }

            sawWritable |= writable;
            if (++buffers > Size)
            {
                return BreakWalk(WalkError.TooLong, head, 0, 0, 0);
            }

            if (!AddBuffer(chain, addr, len, writable))
            {
                return BreakWalk(WalkError.BufferOutside, head, 0, addr, len);
            }

            if ((flags & VirtqueueLayout.DescFlagNext) == 0)
            {
                return true;
            }

            if (next >= tableSize)
            {
                return BreakWalk(WalkError.NextOutside, head, tableSize, next, 0);
            }

            index = next;
        }
    }

    // The messages are built off the hot path: a formatted string in Walk or PopCore would make every call pay for
    // zeroing its formatting state on the stack.
    private enum WalkError
    {
        Loop,
        NestedIndirect,
        IndirectNotNegotiated,
        IndirectWithNext,
        IndirectLength,
        IndirectOutside,
        ReadableAfterWritable,
        TooLong,
        BufferOutside,
        NextOutside,
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool BreakWalk(WalkError error, ushort head, int tableSize, ulong addr, uint len) => Break(error switch
    {
        WalkError.Loop => $"queue {Index}: descriptor chain from head {head} is longer than its table ({tableSize}) — a loop",
        WalkError.NestedIndirect => $"queue {Index}: nested indirect descriptor in chain {head}",
        WalkError.IndirectNotNegotiated => $"queue {Index}: indirect descriptor without INDIRECT_DESC negotiated",
        WalkError.IndirectWithNext => $"queue {Index}: indirect descriptor combined with NEXT in chain {head}",
        WalkError.IndirectLength => $"queue {Index}: indirect table length {len} is not a positive multiple of 16 within {Size} entries",
        WalkError.IndirectOutside => $"queue {Index}: indirect table 0x{addr:x}+{len} is not inside guest memory",
        WalkError.ReadableAfterWritable => $"queue {Index}: device-readable descriptor after a device-writable one in chain {head}",
        WalkError.TooLong => $"queue {Index}: descriptor chain from head {head} is longer than the ring ({Size} descriptors)",
        WalkError.BufferOutside => $"queue {Index}: buffer 0x{addr:x}+{len} in chain {head} is not inside guest memory (or the chain exceeds 2 GiB)",
        _ => $"queue {Index}: next index {addr} outside the table of {tableSize} in chain {head}",
    });

    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool BreakAvailIndex(ushort availIndex, ushort pending) =>
        Break($"queue {Index}: avail index {availIndex} is {pending} entries ahead of {_lastAvail}, more than the ring size {Size}");

    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool BreakHead(ushort head) => Break($"queue {Index}: head index {head} outside the ring of {Size}");

    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool BreakInFlight(ushort head, bool resubmitted) =>
        Break($"queue {Index}: head {head} {(resubmitted ? "resubmitted" : "made available again")} while still in flight");

    private protected override void PushCore(DescriptorChain chain, uint length)
    {
        _inflight?.BeginPush(chain.Head);
        ulong slot = (ulong)(_usedIndex & _mask);
        // One store for the element: id (u32) then len (u32), little-endian like every ring field here.
        Unsafe.WriteUnaligned(_used + 4 + (8 * (int)slot), chain.Head | ((ulong)length << 32));
        _usedIndex++;
        LogRingWrite(4 + (8 * slot), 8);
        _pendingSignal = true;
        if (_inflight is not null)
        {
            // The inflight record says the chain is done only once the driver can see it.
            PublishUsed();
            _inflight.EndPush(chain.Head, _usedIndex);
        }
        else if (!InHandlerPass || (ushort)(_usedIndex - _publishedUsed) >= PublishBatch)
        {
            PublishUsed();
        }
    }

    // Inside a handler pass the used index is stored once per this many elements (and when the pass ends), as the
    // driver reclaims its buffers by polling it: DPDK's vhost library publishes once per burst of 32 likewise.
    private const int PublishBatch = 32;
    private ushort _publishedUsed;

    internal override void PublishUsed()
    {
        if (_publishedUsed != _usedIndex)
        {
            Volatile.Write(ref *(ushort*)(_used + 2), _usedIndex); // release: the elements are visible first
            LogRingWrite(2, 2);
            _publishedUsed = _usedIndex;
        }
    }

    internal override void SuppressKicks()
    {
        // With EVENT_IDX the driver ignores the flag; a stale avail_event already limits kicks to one.
        if (!EventIndex && !IsBroken && !_kicksSuppressed)
        {
            Volatile.Write(ref *(ushort*)_used, (ushort)1); // VRING_USED_F_NO_NOTIFY
            LogRingWrite(0, 2);
            _kicksSuppressed = true;
        }
    }

    private bool _kicksSuppressed;

    internal override bool HasAvailable() => !IsBroken && (AvailIndex != _lastAvail || _resubmitNext < _resubmit.Length);

    internal override bool PrepareToSleep()
    {
        if (IsBroken)
        {
            return false;
        }

        if (_kicksSuppressed)
        {
            Volatile.Write(ref *(ushort*)_used, (ushort)0);
            LogRingWrite(0, 2);
            _kicksSuppressed = false;
        }

        if (EventIndex)
        {
            // avail_event lives after the used ring: "kick me when you pass this index".
            Volatile.Write(ref *(ushort*)(_used + 4 + (8 * Size)), _lastAvail);
            LogRingWrite(4 + (8 * (ulong)Size), 2);
        }

        Interlocked.MemoryBarrier();
        return AvailIndex != _lastAvail || _resubmitNext < _resubmit.Length;
    }

    private protected override bool ShouldNotify()
    {
        if (!_pendingSignal)
        {
            return false;
        }

        Interlocked.MemoryBarrier();
        bool need;
        if (EventIndex)
        {
            ushort usedEvent = Volatile.Read(ref *(ushort*)(_avail + 4 + (2 * Size)));
            need = VirtqueueLayout.NeedEvent(usedEvent, _usedIndex, _signalledUsed);
        }
        else
        {
            need = (Volatile.Read(ref *(ushort*)_avail) & VirtqueueLayout.AvailFlagNoInterrupt) == 0;
        }

        _pendingSignal = false;
        _signalledUsed = _usedIndex;
        return need;
    }
}
