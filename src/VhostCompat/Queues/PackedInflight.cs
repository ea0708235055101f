using System.Runtime.CompilerServices;
using VhostCompat.Memory;

namespace VhostCompat.Queues;

/// <summary>
/// Inflight tracking for one packed ring (vhost-user spec, "Inflight I/O tracking"). Used
/// descriptors overwrite the ring, so the region keeps a copy of every in-flight chain's
/// descriptors in entries taken from a free list; each pop or push is committed by copying the
/// working free head, used index and wrap counter into their "old" fields, and a restarted backend
/// rolls back whatever was not committed. The free list and chain links are kept in process memory
/// too: the shared region is only written at run time, and what a restart finds there is validated
/// (bounds, cycles, entries in two lists) before it is used.
/// </summary>
internal sealed unsafe class PackedInflight
{
    private const int VersionOffset = 8;
    private const int DescNumOffset = 10;
    private const int FreeHeadOffset = 12;
    private const int OldFreeHeadOffset = 14;
    private const int UsedIdxOffset = 16;
    private const int OldUsedIdxOffset = 18;
    private const int UsedWrapOffset = 20;
    private const int OldUsedWrapOffset = 21;
    private const ushort CurrentVersion = 1;

    private readonly byte* _region;
    private readonly int _size;
    private readonly ushort[] _next;
    private readonly ushort[] _last;
    private ushort _freeHead;
    private ulong _counter;

    private PackedInflight(byte* region, int size)
    {
        _region = region;
        _size = size;
        _next = new ushort[size];
        _last = new ushort[size];
    }

    private byte* Entry(int i) => _region + InflightArea.PackedHeaderSize + (i * InflightArea.PackedEntrySize);

    /// <summary>A chain to resubmit: the entry that heads it and its descriptors in ring layout (addr, len, id, flags).</summary>
    internal readonly record struct Pending(ushort Entry, byte[] Descriptors);

    /// <summary>
    /// Opens the region of a ring of <paramref name="ringSize"/> whose device position is
    /// <paramref name="usedIndex"/>/<paramref name="usedWrap"/> (from SET_VRING_BASE, used only for a fresh region).
    /// Recovers the committed state and reports where the device really is and what to resubmit.
    /// </summary>
    public static PackedInflight? Open(nint region, int capacity, int ringSize, byte* ring, int usedIndex, bool usedWrap,
        out Pending[] resubmit, out int deviceUsedIndex, out bool deviceUsedWrap, out int nextAvail, out bool nextAvailWrap, out string error)
    {
        resubmit = [];
        deviceUsedIndex = nextAvail = usedIndex;
        deviceUsedWrap = nextAvailWrap = usedWrap;
        error = string.Empty;
        if (ringSize > capacity)
        {
            error = $"the inflight buffer tracks {capacity} entries per queue, the ring has {ringSize}";
            return null;
        }

        var t = new PackedInflight((byte*)region, ringSize);
        byte* r = t._region;
        ushort version = Volatile.Read(ref *(ushort*)(r + VersionOffset));
        if (version == 0)
        {
            new Span<byte>(r, InflightArea.PackedHeaderSize + (ringSize * InflightArea.PackedEntrySize)).Clear();
            for (int i = 0; i < ringSize; i++)
            {
                t._next[i] = (ushort)(i + 1);
                Unsafe.WriteUnaligned(t.Entry(i) + 2, (ushort)(i + 1));
            }

            Unsafe.WriteUnaligned(r + DescNumOffset, (ushort)ringSize);
            Unsafe.WriteUnaligned(r + UsedIdxOffset, (ushort)usedIndex);
            Unsafe.WriteUnaligned(r + OldUsedIdxOffset, (ushort)usedIndex);
            r[UsedWrapOffset] = r[OldUsedWrapOffset] = usedWrap ? (byte)1 : (byte)0;
            Volatile.Write(ref *(ushort*)(r + VersionOffset), CurrentVersion);
            return t;
        }

        if (version != CurrentVersion)
        {
            error = $"inflight region version {version} is not supported (expected {CurrentVersion})";
            return null;
        }

        if (Unsafe.ReadUnaligned<ushort>(r + DescNumOffset) is var descNum && descNum != ringSize)
        {
            error = $"inflight region tracks {descNum} descriptors, the ring has {ringSize}";
            return null;
        }

        ushort freeHead = Unsafe.ReadUnaligned<ushort>(r + FreeHeadOffset);
        ushort oldFreeHead = Unsafe.ReadUnaligned<ushort>(r + OldFreeHeadOffset);
        ushort used = Unsafe.ReadUnaligned<ushort>(r + UsedIdxOffset);
        ushort oldUsed = Unsafe.ReadUnaligned<ushort>(r + OldUsedIdxOffset);
        byte wrap = r[UsedWrapOffset];
        byte oldWrap = r[OldUsedWrapOffset];
        if (freeHead > ringSize || oldFreeHead > ringSize || used >= ringSize || oldUsed >= ringSize || wrap > 1 || oldWrap > 1)
        {
            error = $"inflight header out of range (free_head {freeHead}/{oldFreeHead}, used_idx {used}/{oldUsed}, wrap {wrap}/{oldWrap}, ring {ringSize})";
            return null;
        }

        if (used != oldUsed || wrap != oldWrap)
        {
            // A push was under way. If its used descriptor reached the ring, the push happened: commit it.
            ushort flags = Volatile.Read(ref *(ushort*)(ring + (oldUsed * VirtqueueLayout.DescriptorSize) + 14));
            bool avail = (flags & VirtqueueLayout.PackedFlagAvail) != 0;
            bool usedBit = (flags & VirtqueueLayout.PackedFlagUsed) != 0;
            bool published = avail == (oldWrap == 1) && usedBit == (oldWrap == 1);
            if (published)
            {
                oldFreeHead = freeHead;
                oldUsed = used;
                oldWrap = wrap;
            }
        }

        // Roll back anything not committed.
        freeHead = oldFreeHead;
        Unsafe.WriteUnaligned(r + FreeHeadOffset, freeHead);
        Unsafe.WriteUnaligned(r + OldFreeHeadOffset, freeHead);
        Unsafe.WriteUnaligned(r + UsedIdxOffset, oldUsed);
        Unsafe.WriteUnaligned(r + OldUsedIdxOffset, oldUsed);
        r[UsedWrapOffset] = r[OldUsedWrapOffset] = oldWrap;

        var owner = new int[ringSize]; // 0 = unseen, -1 = free list, h + 1 = chain headed by h
        for (int i = 0; i < ringSize; i++)
        {
            t._next[i] = Unsafe.ReadUnaligned<ushort>(t.Entry(i) + 2);
        }

        int e = freeHead;
        for (int steps = 0; e != ringSize; steps++)
        {
            if (e > ringSize || steps >= ringSize || owner[e] != 0)
            {
                error = $"inflight free list is broken at entry {e} (out of range, too long or a loop)";
                return null;
            }

            owner[e] = -1;
            *t.Entry(e) = 0; // a pop that was rolled back may have marked its head
            e = t._next[e];
        }

        var heads = new List<(ulong Counter, ushort Entry)>();
        int slots = 0;
        for (int i = 0; i < ringSize; i++)
        {
            byte flag = *t.Entry(i);
            if (flag > 1)
            {
                error = $"inflight entry {i} has flag {flag} (0 or 1 expected)";
                return null;
            }

            if (flag == 1)
            {
                heads.Add((Unsafe.ReadUnaligned<ulong>(t.Entry(i) + 8), (ushort)i));
            }
        }

        heads.Sort();
        var pending = new Pending[heads.Count];
        for (int k = 0; k < heads.Count; k++)
        {
            ushort h = heads[k].Entry;
            ushort num = Unsafe.ReadUnaligned<ushort>(t.Entry(h) + 6);
            ushort last = Unsafe.ReadUnaligned<ushort>(t.Entry(h) + 4);
            if (num == 0 || num > ringSize - slots || last >= ringSize)
            {
                error = $"inflight chain at entry {h} has {num} descriptors ending at {last}; {ringSize - slots} slots remain in the ring";
                return null;
            }

            var descriptors = new byte[num * VirtqueueLayout.DescriptorSize];
            int c = h;
            for (int j = 0; j < num; j++)
            {
                if (c >= ringSize || owner[c] != 0)
                {
                    error = $"inflight chain at entry {h} reaches entry {c}, outside the ring or already in another list";
                    return null;
                }

                owner[c] = h + 1;
                byte* src = t.Entry(c);
                fixed (byte* dst = &descriptors[j * VirtqueueLayout.DescriptorSize])
                {
                    Unsafe.WriteUnaligned(dst, Unsafe.ReadUnaligned<ulong>(src + 24));
                    Unsafe.WriteUnaligned(dst + 8, Unsafe.ReadUnaligned<uint>(src + 20));
                    Unsafe.WriteUnaligned(dst + 12, Unsafe.ReadUnaligned<ushort>(src + 16));
                    Unsafe.WriteUnaligned(dst + 14, Unsafe.ReadUnaligned<ushort>(src + 18));
                }

                if (j + 1 < num)
                {
                    c = t._next[c];
                }
            }

            if (c != last)
            {
                error = $"inflight chain at entry {h} ends at entry {c}, its header says {last}";
                return null;
            }

            t._last[h] = last;
            slots += num;
            pending[k] = new Pending(h, descriptors);
        }

        // Rebuild the free list from every entry no chain owns (heals entries a broken list had orphaned).
        int free = ringSize;
        for (int i = ringSize - 1; i >= 0; i--)
        {
            if (owner[i] <= 0)
            {
                t._next[i] = (ushort)free;
                Unsafe.WriteUnaligned(t.Entry(i) + 2, (ushort)free);
                free = i;
            }
        }

        t._freeHead = (ushort)free;
        Unsafe.WriteUnaligned(r + FreeHeadOffset, t._freeHead);
        Unsafe.WriteUnaligned(r + OldFreeHeadOffset, t._freeHead);
        t._counter = heads.Count == 0 ? 0 : heads[^1].Counter + 1;
        resubmit = pending;
        deviceUsedIndex = oldUsed;
        deviceUsedWrap = oldWrap == 1;
        nextAvail = oldUsed + slots;
        nextAvailWrap = deviceUsedWrap;
        if (nextAvail >= ringSize)
        {
            nextAvail -= ringSize;
            nextAvailWrap = !nextAvailWrap;
        }

        return t;
    }

    /// <summary>
    /// Records a chain of <paramref name="slots"/> descriptors starting at ring slot <paramref name="first"/>
    /// (copied from the ring) and commits it. Returns the entry heading it, or -1 when the free list is exhausted.
    /// </summary>
    public int Popped(byte* ring, int first, int slots)
    {
        int h = _freeHead;
        int e = h;
        for (int k = 0; k < slots; k++)
        {
            if (e >= _size)
            {
                return -1;
            }

            e = _next[e];
        }

        byte* head = Entry(h);
        Unsafe.WriteUnaligned(head + 6, (ushort)slots);
        Unsafe.WriteUnaligned(head + 8, _counter++);
        Volatile.Write(ref *head, (byte)1);
        e = h;
        int slot = first;
        for (int k = 0; k < slots; k++)
        {
            byte* d = ring + (slot * VirtqueueLayout.DescriptorSize);
            byte* x = Entry(e);
            Unsafe.WriteUnaligned(x + 24, Unsafe.ReadUnaligned<ulong>(d));
            Unsafe.WriteUnaligned(x + 20, Unsafe.ReadUnaligned<uint>(d + 8));
            Unsafe.WriteUnaligned(x + 16, Unsafe.ReadUnaligned<ushort>(d + 12));
            Unsafe.WriteUnaligned(x + 18, Unsafe.ReadUnaligned<ushort>(d + 14));
            if (k + 1 == slots)
            {
                _last[h] = (ushort)e;
                Unsafe.WriteUnaligned(head + 4, (ushort)e);
            }

            e = _next[e];
            slot = slot + 1 == _size ? 0 : slot + 1;
        }

        _freeHead = (ushort)e;
        Unsafe.WriteUnaligned(_region + FreeHeadOffset, _freeHead);
        Volatile.Write(ref *(ushort*)(_region + OldFreeHeadOffset), _freeHead); // commit
        return h;
    }

    /// <summary>Before the used descriptor is published: return the chain's entries to the free list and record the new device position.</summary>
    public void BeginPush(int entry, int usedIndexAfter, bool usedWrapAfter)
    {
        int last = _last[entry];
        _next[last] = _freeHead;
        Unsafe.WriteUnaligned(Entry(last) + 2, _freeHead);
        _freeHead = (ushort)entry;
        Unsafe.WriteUnaligned(_region + FreeHeadOffset, _freeHead);
        Unsafe.WriteUnaligned(_region + UsedIdxOffset, (ushort)usedIndexAfter);
        Volatile.Write(ref _region[UsedWrapOffset], usedWrapAfter ? (byte)1 : (byte)0);
    }

    /// <summary>After the used descriptor is published: the chain is done; commit.</summary>
    public void EndPush(int entry, int usedIndexAfter, bool usedWrapAfter)
    {
        Volatile.Write(ref *Entry(entry), (byte)0);
        Unsafe.WriteUnaligned(_region + OldFreeHeadOffset, _freeHead);
        Unsafe.WriteUnaligned(_region + OldUsedIdxOffset, (ushort)usedIndexAfter);
        Volatile.Write(ref _region[OldUsedWrapOffset], usedWrapAfter ? (byte)1 : (byte)0);
    }
}
