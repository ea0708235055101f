using VhostCompat.Queues;

namespace VhostCompat.Tests.Queues;

/// <summary>The driver side of a split ring laid out by hand in <see cref="GuestRam"/>.</summary>
internal sealed class SplitRing
{
    private readonly GuestRam _ram;
    private ushort _availIdx;

    /// <summary>Zeroes the descriptor table, avail and used rings (everything else keeps its canary).</summary>
    public SplitRing(GuestRam ram, int size, ulong desc = 0x10000, ulong avail = 0x11000, ulong used = 0x12000)
    {
        _ram = ram;
        Size = size;
        DescGpa = desc;
        AvailGpa = avail;
        UsedGpa = used;
        ram.Fill(desc, size * 16, 0);
        ram.Fill(avail, 6 + (2 * size), 0);
        ram.Fill(used, 6 + (8 * size), 0);
    }

    public int Size { get; }

    public ulong DescGpa { get; }

    public ulong AvailGpa { get; }

    public ulong UsedGpa { get; }

    public static void WriteDesc(GuestRam ram, ulong table, int i, ulong addr, uint len, ushort flags, ushort next)
    {
        ulong d = table + ((ulong)i * 16);
        ram.W64(d, addr);
        ram.W32(d + 8, len);
        ram.W16(d + 12, flags);
        ram.W16(d + 14, next);
    }

    public void Desc(int i, ulong addr, uint len, ushort flags = 0, ushort next = 0) => WriteDesc(_ram, DescGpa, i, addr, len, flags, next);

    /// <summary>Writes a chain of elements into descriptors <paramref name="indices"/> (NEXT links them in order).</summary>
    public void Chain(int[] indices, params Elem[] elems)
    {
        for (int k = 0; k < elems.Length; k++)
        {
            ushort flags = (ushort)((elems[k].Write ? VirtqueueLayout.DescFlagWrite : 0) | (k + 1 < elems.Length ? VirtqueueLayout.DescFlagNext : 0));
            Desc(indices[k], elems[k].Addr, elems[k].Len, flags, k + 1 < elems.Length ? (ushort)indices[k + 1] : (ushort)0);
        }
    }

    /// <summary>Puts heads into the avail ring and publishes the new avail.idx.</summary>
    public void Offer(params ushort[] heads)
    {
        foreach (ushort h in heads)
        {
            _ram.W16(AvailGpa + 4 + (2 * (ulong)(_availIdx % Size)), h);
            _availIdx++;
        }

        _ram.W16(AvailGpa + 2, _availIdx);
    }

    public ushort AvailIdx
    {
        get => _availIdx;
        set
        {
            _availIdx = value;
            _ram.W16(AvailGpa + 2, value);
        }
    }

    public ushort AvailFlags { set => _ram.W16(AvailGpa, value); }

    /// <summary>used->flags as the driver reads it before deciding to kick (1 = VRING_USED_F_NO_NOTIFY).</summary>
    public ushort UsedFlags() => _ram.R16(UsedGpa);

    public ushort UsedEvent { set => _ram.W16(AvailGpa + 4 + (2 * (ulong)Size), value); }

    public ushort AvailEvent => _ram.R16(UsedGpa + 4 + (8 * (ulong)Size));

    public ushort UsedIdx
    {
        get => _ram.R16(UsedGpa + 2);
        set => _ram.W16(UsedGpa + 2, value);
    }

    public (uint Id, uint Len) Used(int slot) =>
        (_ram.R32(UsedGpa + 4 + (8 * (ulong)slot)), _ram.R32(UsedGpa + 8 + (8 * (ulong)slot)));

    /// <summary>The bytes a device may write when pushing: used.idx and the used elements (not flags, not avail_event).</summary>
    public (long Offset, long Length) UsedWritable => _ram.Range(UsedGpa + 2, 2 + (8 * (long)Size));

    public SplitVirtqueue Queue(bool indirect = false, bool eventIndex = false, ushort nextAvail = 0, int index = 0) =>
        new(index, Size, _ram.Table, GuestRam.Ua(DescGpa), GuestRam.Ua(AvailGpa), GuestRam.Ua(UsedGpa), nextAvail, indirect, eventIndex);
}

/// <summary>The driver side of a packed ring laid out by hand in <see cref="GuestRam"/>.</summary>
internal sealed class PackedRing
{
    public const ushort Avail = VirtqueueLayout.PackedFlagAvail;
    public const ushort UsedF = VirtqueueLayout.PackedFlagUsed;

    private readonly GuestRam _ram;
    private readonly Dictionary<ushort, int> _slotsById = [];

    public PackedRing(GuestRam ram, int size, ulong ring = 0x10000, ulong driver = 0x11000, ulong device = 0x11100)
    {
        _ram = ram;
        Size = size;
        RingGpa = ring;
        DriverGpa = driver;
        DeviceGpa = device;
        ram.Fill(ring, size * 16, 0);
        ram.Fill(driver, 4, 0);
        ram.Fill(device, 4, 0);
    }

    public int Size { get; }

    public ulong RingGpa { get; }

    public ulong DriverGpa { get; }

    public ulong DeviceGpa { get; }

    /// <summary>Driver's next slot to make available and its wrap counter.</summary>
    public int Next { get; set; }

    public bool Wrap { get; set; } = true;

    /// <summary>Driver's next slot to read a used descriptor from and its wrap counter.</summary>
    public int UsedNext { get; set; }

    public bool UsedWrap { get; set; } = true;

    public static ushort AvailBits(bool wrap) => wrap ? Avail : UsedF;

    public void WriteDesc(int slot, ulong addr, uint len, ushort id, ushort flags)
    {
        ulong d = RingGpa + ((ulong)slot * 16);
        _ram.W64(d, addr);
        _ram.W32(d + 8, len);
        _ram.W16(d + 12, id);
        _ram.W16(d + 14, flags);
    }

    public (ulong Addr, uint Len, ushort Id, ushort Flags) ReadDesc(int slot)
    {
        ulong d = RingGpa + ((ulong)slot * 16);
        return (BitConverter.ToUInt64(_ram.Read(d, 8)), _ram.R32(d + 8), _ram.R16(d + 12), _ram.R16(d + 14));
    }

    /// <summary>Makes a buffer available (all descriptors carry <paramref name="id"/>; the first one's flags are written last).</summary>
    public int Post(ushort id, params Elem[] elems) => PostWithIds(elems.Select(_ => id).ToArray(), elems, extraFlags: 0);

    /// <summary>Like <see cref="Post"/> with a per-descriptor id and extra flag bits OR-ed into every descriptor.</summary>
    public int PostWithIds(ushort[] ids, Elem[] elems, ushort extraFlags)
    {
        int first = Next;
        ushort firstFlags = 0;
        for (int k = 0; k < elems.Length; k++)
        {
            ushort flags = (ushort)((elems[k].Write ? VirtqueueLayout.DescFlagWrite : 0) | (k + 1 < elems.Length ? VirtqueueLayout.DescFlagNext : 0) | AvailBits(Wrap) | extraFlags);
            if (k == 0)
            {
                // Flags 0 never mean "available" (AVAIL != USED is required); the real flags go in last.
                firstFlags = flags;
                flags = 0;
            }

            WriteDesc(Next, elems[k].Addr, elems[k].Len, ids[k], flags);
            Advance();
        }

        _ram.W16(RingGpa + ((ulong)first * 16) + 14, firstFlags);
        _slotsById[ids[^1]] = elems.Length;
        return elems.Length;
    }

    /// <summary>Makes an indirect buffer available: one descriptor referring to a table.</summary>
    public void PostIndirect(ushort id, ulong table, uint tableLen, ushort extraFlags = 0)
    {
        WriteDesc(Next, table, tableLen, id, (ushort)(VirtqueueLayout.DescFlagIndirect | AvailBits(Wrap) | extraFlags));
        _slotsById[id] = 1;
        Advance();
    }

    /// <summary>Writes one entry of a packed indirect table.</summary>
    public static void WriteIndirect(GuestRam ram, ulong table, int i, Elem e, ushort id = 0xBEEF)
    {
        ulong d = table + ((ulong)i * 16);
        ram.W64(d, e.Addr);
        ram.W32(d + 8, e.Len);
        ram.W16(d + 12, id);
        ram.W16(d + 14, e.Write ? VirtqueueLayout.DescFlagWrite : (ushort)0);
    }

    private void Advance()
    {
        if (++Next == Size)
        {
            Next = 0;
            Wrap = !Wrap;
        }
    }

    /// <summary>Reads the next used descriptor if the device wrote one; advances by the slots that buffer occupied.</summary>
    public bool TryTakeUsed(out ushort id, out uint len, out ushort flags)
    {
        var d = ReadDesc(UsedNext);
        id = d.Id;
        len = d.Len;
        flags = d.Flags;
        bool avail = (flags & Avail) != 0;
        bool used = (flags & UsedF) != 0;
        if (avail != UsedWrap || used != UsedWrap)
        {
            return false;
        }

        int slots = _slotsById.TryGetValue(id, out int n) ? n : 1;
        UsedNext += slots;
        if (UsedNext >= Size)
        {
            UsedNext -= Size;
            UsedWrap = !UsedWrap;
        }

        return true;
    }

    public void DriverEvent(ushort offWrap, ushort flags)
    {
        _ram.W16(DriverGpa, offWrap);
        _ram.W16(DriverGpa + 2, flags);
    }

    public ushort DeviceFlags => _ram.R16(DeviceGpa + 2);

    public (long Offset, long Length) RingRange => _ram.Range(RingGpa, 16L * Size);

    public PackedVirtqueue Queue(uint @base = 0x8000_8000, bool indirect = false, bool eventIndex = false, int index = 0) =>
        new(index, Size, _ram.Table, GuestRam.Ua(RingGpa), GuestRam.Ua(DriverGpa), GuestRam.Ua(DeviceGpa), @base, indirect, eventIndex);
}
