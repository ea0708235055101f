using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using VhostCompat.Memory;

namespace VhostCompat.Queues;

/// <summary>
/// A packed virtqueue: one descriptor ring shared by driver and device, plus the driver and device
/// event suppression areas. Wrap counters start at 1 and flip each time an index passes the ring size.
/// </summary>
internal sealed unsafe class PackedVirtqueue : Virtqueue
{
    private readonly ulong _ringAddress;
    private readonly ulong _driverAreaAddress;
    private readonly ulong _deviceAreaAddress;
    private byte* _ring;
    private byte* _driverArea;
    private byte* _deviceArea;
    private int _lastAvail;
    private bool _availWrap;
    private int _usedIndex;
    private bool _usedWrap;
    private int _signalledUsed;
    private bool _signalledWrap;
    private bool _pendingSignal;
    private PackedInflight? _inflight;
    private PackedInflight.Pending[] _resubmit = [];
    private int _resubmitNext;

    public PackedVirtqueue(int index, int size, GuestMemoryTable memory, ulong ring, ulong driverArea, ulong deviceArea, uint @base, bool indirect, bool eventIndex)
        : base(index, size, memory, indirect, eventIndex)
    {
        _ringAddress = ring;
        _driverAreaAddress = driverArea;
        _deviceAreaAddress = deviceArea;
        _lastAvail = (int)(@base & 0x7FFF);
        _availWrap = (@base & 0x8000) != 0;
        if ((@base >> 16) == 0)
        {
            // DPDK 22.11 sends only the avail half; its own backend then sets used = avail.
            _usedIndex = _lastAvail;
            _usedWrap = _availWrap;
        }
        else
        {
            _usedIndex = (int)((@base >> 16) & 0x7FFF);
            _usedWrap = (@base & 0x8000_0000) != 0;
        }

        if (_lastAvail >= size || _usedIndex >= size)
        {
            throw new ArgumentException($"queue {index}: ring base 0x{@base:x} outside the ring of {size}");
        }

        _signalledUsed = _usedIndex;
        _signalledWrap = _usedWrap;
        if (Translate(memory) is { } error)
        {
            throw new ArgumentException(error);
        }
    }

    internal override uint Base =>
        (uint)_lastAvail | (_availWrap ? 0x8000u : 0) | ((uint)_usedIndex << 16) | (_usedWrap ? 0x8000_0000u : 0);

    internal override int PendingResubmissions => _resubmit.Length - _resubmitNext;

    internal override string? AttachInflight(nint region, int capacity)
    {
        PackedInflight? tracker = PackedInflight.Open(region, capacity, Size, _ring, _usedIndex, _usedWrap, out var resubmit,
            out int usedIndex, out bool usedWrap, out int nextAvail, out bool nextAvailWrap, out string error);
        if (tracker is null)
        {
            return $"queue {Index}: {error}";
        }

        // The region knows where the device really is (QEMU cannot restore a packed ring's position itself).
        _inflight = tracker;
        _resubmit = resubmit;
        _resubmitNext = 0;
        _usedIndex = _signalledUsed = usedIndex;
        _usedWrap = _signalledWrap = usedWrap;
        _lastAvail = nextAvail;
        _availWrap = nextAvailWrap;
        return null;
    }

    internal override string? Translate(GuestMemoryTable table)
    {
        if (!table.TryTranslateFrontendVirtual(_ringAddress, (ulong)Size * VirtqueueLayout.DescriptorSize, out nint r)
            || !table.TryTranslateFrontendVirtual(_driverAreaAddress, 4, out nint drv)
            || !table.TryTranslateFrontendVirtual(_deviceAreaAddress, 4, out nint dev))
        {
            return $"queue {Index}: packed ring structures are not inside guest memory";
        }

        _ring = (byte*)r;
        _driverArea = (byte*)drv;
        _deviceArea = (byte*)dev;
        return null;
    }

    private bool IsAvailable(int slot, bool wrap)
    {
        ushort flags = Volatile.Read(ref *(ushort*)(_ring + (slot * VirtqueueLayout.DescriptorSize) + 14));
        bool avail = (flags & VirtqueueLayout.PackedFlagAvail) != 0;
        bool used = (flags & VirtqueueLayout.PackedFlagUsed) != 0;
        return avail == wrap && used != wrap;
    }

    private protected override bool PopCore([NotNullWhen(true)] out DescriptorChain? chain)
    {
        chain = null;
        if (_resubmitNext < _resubmit.Length)
        {
            return Resubmit(out chain);
        }

        if (!IsAvailable(_lastAvail, _availWrap))
        {
            return false;
        }

        // Pass 1: the chain's extent and its buffer id, which only the last descriptor carries (virtio 1.1 §2.7.6).
        int slot = _lastAvail;
        int slots = 0;
        ushort bufferId;
        while (true)
        {
            if (++slots > Size)
            {
                return Break($"queue {Index}: packed chain at slot {_lastAvail} is longer than the ring");
            }

            byte* d = _ring + (slot * VirtqueueLayout.DescriptorSize);
            bufferId = Unsafe.ReadUnaligned<ushort>(d + 12);
            ushort flags = Unsafe.ReadUnaligned<ushort>(d + 14);
            if ((flags & VirtqueueLayout.DescFlagIndirect) != 0 || (flags & VirtqueueLayout.DescFlagNext) == 0)
            {
                break;
            }

            slot = slot + 1 == Size ? 0 : slot + 1;
        }

        if (bufferId >= Size)
        {
            return Break($"queue {Index}: buffer id {bufferId} outside the ring of {Size}");
        }

        DescriptorChain c = ChainFor(bufferId);
        if (c.InFlight)
        {
            return Break($"queue {Index}: buffer id {bufferId} reused while in flight");
        }

        // Pass 2: validate and translate (re-reading guest memory; a chain that changed meanwhile is an error).
        c.Reset();
        if (!BuildChain(c, _ring, _lastAvail, slots, bufferId))
        {
            return false;
        }

        if (_inflight is not null)
        {
            int entry = _inflight.Popped(_ring, _lastAvail, slots);
            if (entry < 0)
            {
                return Break($"queue {Index}: the inflight region has no free entry left for a chain of {slots} descriptors");
            }

            c.InflightEntry = entry;
        }

        Finish(c, bufferId, slots);
        chain = c;
        return true;
    }

    /// <summary>Validates and translates <paramref name="slots"/> descriptors in ring layout starting at <paramref name="first"/> (wrapping at the ring size).</summary>
    private bool BuildChain(DescriptorChain c, byte* descriptors, int first, int slots, ushort bufferId)
    {
        int slot = first;
        bool sawWritable = false;
        for (int i = 0; i < slots; i++)
        {
            byte* d = descriptors + (slot * VirtqueueLayout.DescriptorSize);
            ulong addr = Unsafe.ReadUnaligned<ulong>(d);
            uint len = Unsafe.ReadUnaligned<uint>(d + 8);
            ushort flags = Unsafe.ReadUnaligned<ushort>(d + 14);
            bool last = i == slots - 1;
            if ((flags & VirtqueueLayout.DescFlagIndirect) != 0)
            {
                if (!Indirect || (flags & VirtqueueLayout.DescFlagNext) != 0 || i != 0 || !last)
                {
                    return Break($"queue {Index}: invalid indirect descriptor at slot {slot}");
                }

                return WalkIndirect(c, addr, len);
            }

            if (((flags & VirtqueueLayout.DescFlagNext) == 0) != last || (last && Unsafe.ReadUnaligned<ushort>(d + 12) != bufferId))
            {
                return Break($"queue {Index}: packed chain changed while being read");
            }

            bool writable = (flags & VirtqueueLayout.DescFlagWrite) != 0;
            if (!writable && sawWritable)
            {
                return Break($"queue {Index}: device-readable descriptor after a device-writable one at slot {slot}");
            }

            sawWritable |= writable;
            if (!AddBuffer(c, addr, len, writable))
            {
                return Break($"queue {Index}: buffer 0x{addr:x}+{len} at slot {slot} is not inside guest memory");
            }

            slot = slot + 1 == Size ? 0 : slot + 1;
        }

        return true;
    }

    private bool Resubmit([NotNullWhen(true)] out DescriptorChain? chain)
    {
        chain = null;
        PackedInflight.Pending pending = _resubmit[_resubmitNext];
        int slots = pending.Descriptors.Length / VirtqueueLayout.DescriptorSize;
        ushort bufferId = BitConverter.ToUInt16(pending.Descriptors, ((slots - 1) * VirtqueueLayout.DescriptorSize) + 12);
        if (bufferId >= Size)
        {
            return Break($"queue {Index}: resubmitted buffer id {bufferId} outside the ring of {Size}");
        }

        DescriptorChain c = ChainFor(bufferId);
        if (c.InFlight)
        {
            return Break($"queue {Index}: resubmitted buffer id {bufferId} is already in flight");
        }

        c.Reset();
        fixed (byte* descriptors = pending.Descriptors)
        {
            if (!BuildChain(c, descriptors, 0, slots, bufferId))
            {
                return false;
            }
        }

        _resubmitNext++;
        c.Head = bufferId;
        c.DescriptorSlots = slots;
        c.InflightEntry = pending.Entry;
        c.IsResubmitted = true;
        c.InFlight = true;
        chain = c;
        return true;
    }

    private void Finish(DescriptorChain c, ushort bufferId, int slots)
    {
        c.Head = bufferId;
        c.DescriptorSlots = slots;
        c.InFlight = true;
        _lastAvail += slots;
        if (_lastAvail >= Size)
        {
            _lastAvail -= Size;
            _availWrap = !_availWrap;
        }
    }

    private bool WalkIndirect(DescriptorChain c, ulong addr, uint len)
    {
        if (len == 0 || len % VirtqueueLayout.DescriptorSize != 0 || len / VirtqueueLayout.DescriptorSize > (uint)Size)
        {
            return Break($"queue {Index}: indirect table length {len} is not a positive multiple of 16");
        }

        if (!TryLocateIndirectTable(addr, len, out byte* table))
        {
            return Break($"queue {Index}: indirect table 0x{addr:x}+{len} is not inside guest memory");
        }

        bool sawWritable = false;
        for (int i = 0; i < len / VirtqueueLayout.DescriptorSize; i++)
        {
            byte* d = table + (i * VirtqueueLayout.DescriptorSize);
            ulong a = Unsafe.ReadUnaligned<ulong>(d);
            uint l = Unsafe.ReadUnaligned<uint>(d + 8);
            ushort flags = Unsafe.ReadUnaligned<ushort>(d + 14);
            if ((flags & VirtqueueLayout.DescFlagIndirect) != 0)
            {
                return Break($"queue {Index}: nested indirect descriptor");
            }

            bool writable = (flags & VirtqueueLayout.DescFlagWrite) != 0;
            if (!writable && sawWritable)
            {
                return Break($"queue {Index}: device-readable descriptor after a device-writable one in an indirect table");
            }

            sawWritable |= writable;
            if (!AddBuffer(c, a, l, writable))
            {
                return Break($"queue {Index}: indirect buffer 0x{a:x}+{l} is not inside guest memory");
            }
        }

        return true;
    }

    private protected override void PushCore(DescriptorChain chain, uint length)
    {
        int usedAfter = _usedIndex + chain.DescriptorSlots;
        bool wrapAfter = _usedWrap;
        if (usedAfter >= Size)
        {
            usedAfter -= Size;
            wrapAfter = !wrapAfter;
        }

        if (_inflight is not null)
        {
            _inflight.BeginPush(chain.InflightEntry, usedAfter, wrapAfter);
        }

        byte* d = _ring + (_usedIndex * VirtqueueLayout.DescriptorSize);
        Unsafe.WriteUnaligned(d + 8, length);
        Unsafe.WriteUnaligned(d + 12, chain.Head); // the buffer id (packed chains are pooled by it)
        ushort flags = (ushort)((_usedWrap ? VirtqueueLayout.PackedFlagAvail | VirtqueueLayout.PackedFlagUsed : 0) | (length > 0 ? VirtqueueLayout.DescFlagWrite : 0));
        Volatile.Write(ref *(ushort*)(d + 14), flags); // release: id and len are visible first
        if (DirtyLog is not null && Memory.TryFrontendVirtualToGuestPhysical(_ringAddress + ((ulong)_usedIndex * VirtqueueLayout.DescriptorSize), out ulong gpa))
        {
            MarkDirty(gpa, VirtqueueLayout.DescriptorSize);
        }

        _usedIndex = usedAfter;
        _usedWrap = wrapAfter;
        _inflight?.EndPush(chain.InflightEntry, usedAfter, wrapAfter);
        _pendingSignal = true;
    }

    internal override void SuppressKicks()
    {
        if (!IsBroken)
        {
            Volatile.Write(ref *(ushort*)(_deviceArea + 2), VirtqueueLayout.PackedEventDisable);
            LogDeviceAreaWrite();
        }
    }

    /// <summary>The device event suppression area is guest memory the device writes: mark it while logging.</summary>
    private void LogDeviceAreaWrite()
    {
        if (DirtyLog is not null && Memory.TryFrontendVirtualToGuestPhysical(_deviceAreaAddress + 2, out ulong gpa))
        {
            MarkDirty(gpa, 2);
        }
    }

    internal override bool HasAvailable() => !IsBroken && (IsAvailable(_lastAvail, _availWrap) || _resubmitNext < _resubmit.Length);

    internal override bool PrepareToSleep()
    {
        if (IsBroken)
        {
            return false;
        }

        // Device area flags = ENABLE: the driver should kick for new buffers.
        Volatile.Write(ref *(ushort*)(_deviceArea + 2), VirtqueueLayout.PackedEventEnable);
        LogDeviceAreaWrite();
        Interlocked.MemoryBarrier();
        return IsAvailable(_lastAvail, _availWrap) || _resubmitNext < _resubmit.Length;
    }

    private protected override bool ShouldNotify()
    {
        if (!_pendingSignal)
        {
            return false;
        }

        Interlocked.MemoryBarrier();
        ushort offWrap = Volatile.Read(ref *(ushort*)_driverArea);
        ushort flags = Volatile.Read(ref *(ushort*)(_driverArea + 2));
        bool need;
        if (flags == VirtqueueLayout.PackedEventDisable)
        {
            need = false;
        }
        else if (flags == VirtqueueLayout.PackedEventDesc && EventIndex)
        {
            int eventOffset = offWrap & 0x7FFF;
            bool eventWrap = (offWrap & 0x8000) != 0;
            int newIndex = _usedIndex;
            int oldIndex = _signalledUsed;
            if (_usedWrap != _signalledWrap)
            {
                newIndex += Size;
            }

            if (eventWrap != _signalledWrap)
            {
                eventOffset += Size;
            }

            // An offset beyond the ring can never be reached: treat it as "notify" (virtio 1.x "Driver and Device Event Suppression": the offset must lie inside the ring).
            need = (offWrap & 0x7FFF) >= Size || VirtqueueLayout.NeedEvent((ushort)eventOffset, (ushort)newIndex, (ushort)oldIndex);
        }
        else
        {
            need = true;
        }

        _pendingSignal = false;
        _signalledUsed = _usedIndex;
        _signalledWrap = _usedWrap;
        return need;
    }
}
