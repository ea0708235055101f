using System.Buffers.Binary;
using CsCheck;
using VhostCompat.Queues;

namespace VhostCompat.Tests.Queues;

/// <summary>
/// Property tests over random rings (HOSTILE-INPUTS D1–D25, "seeded randomization"). Memory is two
/// GPA-adjacent regions whose host mappings are apart (GPA 0x10000–0x18000 at file 0x1000, 0x18000–0x20000
/// at file 0x11000), with canary bytes in the guard pages and the gap. Each property draws a seed (printed by
/// CsCheck on failure) and builds the whole scenario from it.
/// Valid rings must be popped exactly as laid out. After random mutations the queue must never throw, never
/// write anything but the used ring (and the buffers the test writes through the chain), and every pop must match
/// an independent reference walker (<see cref="RingModel"/>): the same chain, or a broken queue.
/// </summary>
public class VirtqueuePropertyTests
{
    private const ulong DescGpa = 0x10000;
    private const ulong AvailGpa = 0x10800; // split avail ring / packed driver event area
    private const ulong UsedGpa = 0x10A00; // split used ring / packed device event area
    private const ulong TableStart = 0x11000;
    private const ulong TableEnd = 0x13000;
    private const ulong DataStart = 0x13000;
    private const ulong DataEnd = 0x20000;
    private const ushort N = VirtqueueLayout.DescFlagNext;
    private const ushort W = VirtqueueLayout.DescFlagWrite;
    private const ushort I = VirtqueueLayout.DescFlagIndirect;

    private static readonly int[] SplitSizes = [1, 2, 4, 8, 16, 32, 128];
    private static readonly int[] PackedSizes = [1, 2, 3, 4, 5, 8, 16, 33, 64];

    private static GuestRam NewRam() =>
        new(0x1A000, new RegionSpec(0x10000, 0x8000, 0x1000), new RegionSpec(0x18000, 0x8000, 0x11000));

    private static int[] Shuffle(Random rnd, int n)
    {
        int[] a = [.. Enumerable.Range(0, n)];
        rnd.Shuffle(a);
        return a;
    }

    private static byte[] RandomBytes(Random rnd, int n)
    {
        var b = new byte[n];
        rnd.NextBytes(b);
        return b;
    }

    /// <summary>Hands out buffers (random content) and indirect tables from the data and table areas.</summary>
    private sealed class Alloc(Random rnd, GuestRam ram)
    {
        private ulong _data = DataStart + (ulong)rnd.Next(0, 0x5000); // so buffers cross the region boundary at random points

        public ulong Table { get; private set; } = TableStart;

        public bool Full => _data + 0x400 > DataEnd || Table + 0x200 > TableEnd;

        public void Reset()
        {
            _data = DataStart + (ulong)rnd.Next(0, 0x5000);
            Table = TableStart;
        }

        public Elem Buffer(bool write)
        {
            if (rnd.Next(8) == 0)
            {
                ulong junk = rnd.Next(3) switch { 0 => 0, 1 => (ulong)rnd.NextInt64(long.MinValue, long.MaxValue), _ => ulong.MaxValue - (ulong)rnd.Next(16) };
                return new Elem(junk, 0, write); // zero length: the address must never be translated
            }

            _data += (ulong)rnd.Next(0, 9);
            uint len = (uint)rnd.Next(1, 49);
            var e = new Elem(_data, len, write);
            ram.Write(_data, RandomBytes(rnd, (int)len));
            _data += len;
            return e;
        }

        public ulong TableFor(int entries)
        {
            ulong t = Table + (ulong)rnd.Next(0, 4); // the spec sets no alignment for indirect tables
            Table = (t + ((ulong)entries * 16) + 15) & ~15UL;
            return t;
        }
    }

    private static Elem[] Elems(Random rnd, Alloc alloc, int n)
    {
        int readable = rnd.Next(n + 1);
        return [.. Enumerable.Range(0, n).Select(k => alloc.Buffer(k >= readable))];
    }

    // ---------------- split ----------------

    private sealed record SplitCase(SplitRing Ring, bool Feature, ushort Start, List<(ushort Head, Elem[] Elems)> Chains, Alloc Alloc);

    private static void WriteSplitTable(Random rnd, GuestRam ram, Alloc alloc, SplitRing ring, int descIndex, Elem[] elems)
    {
        int entries = Math.Min(ring.Size, elems.Length + rnd.Next(3));
        ulong t = alloc.TableFor(entries);
        ram.Write(t, RandomBytes(rnd, entries * 16)); // unreached entries are junk
        int[] pos = [0, .. Shuffle(rnd, entries - 1).Select(x => x + 1)];
        for (int k = 0; k < elems.Length; k++)
        {
            bool last = k + 1 == elems.Length;
            SplitRing.WriteDesc(ram, t, pos[k], elems[k].Addr, elems[k].Len, (ushort)((elems[k].Write ? W : 0) | (last ? 0 : N)), last ? (ushort)rnd.Next(0x10000) : (ushort)pos[k + 1]);
        }

        ring.Desc(descIndex, t, (uint)entries * 16, (ushort)(I | (rnd.Next(2) == 0 ? W : 0)));
    }

    private static SplitCase BuildSplit(Random rnd, GuestRam ram)
    {
        int size = SplitSizes[rnd.Next(SplitSizes.Length)];
        var ring = new SplitRing(ram, size, DescGpa, AvailGpa, UsedGpa);
        bool feature = rnd.Next(2) == 0;
        ushort start = rnd.Next(4) == 0 ? (ushort)(0xFFFF - rnd.Next(8)) : (ushort)rnd.Next(0x10000);
        ring.AvailIdx = start;
        ring.UsedIdx = (ushort)rnd.Next(0x10000);
        var alloc = new Alloc(rnd, ram);
        int[] perm = Shuffle(rnd, size);
        int used = 0;
        var chains = new List<(ushort, Elem[])>();
        while (used < size && !alloc.Full && rnd.Next(12) != 0)
        {
            int free = size - used;
            int kind = feature ? rnd.Next(3) : 0;
            int n = 1 + rnd.Next(Math.Min(5, size));
            if (kind == 0)
            {
                n = Math.Min(n, free);
            }

            Elem[] elems = Elems(rnd, alloc, n);
            int readable = elems.Count(e => !e.Write);
            if (kind == 2 && (readable == 0 || n < 2 || free < 2))
            {
                kind = 1;
            }

            ushort head = (ushort)perm[used];
            switch (kind)
            {
                case 0:
                    ring.Chain(perm[used..(used + n)], elems);
                    used += n;
                    break;
                case 1:
                    WriteSplitTable(rnd, ram, alloc, ring, perm[used], elems);
                    used++;
                    break;
                default:
                    int p = 1 + rnd.Next(Math.Min(Math.Min(readable, free - 1), n - 1)); // direct readable prefix
                    int[] idx = perm[used..(used + p + 1)];
                    for (int k = 0; k < p; k++)
                    {
                        ring.Desc(idx[k], elems[k].Addr, elems[k].Len, N, (ushort)idx[k + 1]);
                    }

                    WriteSplitTable(rnd, ram, alloc, ring, idx[p], elems[p..]);
                    used += p + 1;
                    break;
            }

            chains.Add((head, elems));
        }

        rnd.Shuffle(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(chains));
        foreach (var (head, _) in chains)
        {
            ring.Offer(head);
        }

        return new SplitCase(ring, feature, start, chains, alloc);
    }

    private static ushort InterestingIndex(Random rnd, int size) => rnd.Next(4) switch
    {
        0 => (ushort)rnd.Next(size),
        1 => (ushort)(size + rnd.Next(2)),
        2 => 0xFFFF,
        _ => (ushort)rnd.Next(0x10000),
    };

    private static ulong InterestingAddr(Random rnd) => rnd.Next(10) switch
    {
        0 => 0x17FF0 + (ulong)rnd.Next(0x20), // straddles the region boundary
        1 => 0x1FFF0 + (ulong)rnd.Next(0x20), // runs off the end of memory
        2 => 0xFFF0 + (ulong)rnd.Next(0x20), // starts before memory
        3 => DescGpa + (ulong)rnd.Next(0x1000), // aliases the rings (D24)
        4 => TableStart + (ulong)rnd.Next(0x2000),
        5 => ulong.MaxValue - (ulong)rnd.Next(0x2000), // wraps
        6 => (ulong)rnd.NextInt64(long.MinValue, long.MaxValue),
        _ => DataStart + (ulong)rnd.Next(0, (int)(DataEnd - DataStart)),
    };

    private static uint InterestingLen(Random rnd) => rnd.Next(10) switch
    {
        0 => 0,
        1 => (uint)(16 * rnd.Next(0, 4)) + (uint)rnd.Next(-1, 2),
        2 => 0xFFFF_FFFF,
        3 => 0x8000_0000,
        4 => 0x1_0000,
        5 => (uint)rnd.NextInt64(0, 1L << 32),
        _ => (uint)rnd.Next(1, 0x100),
    };

    private static ushort InterestingFlags(Random rnd) => rnd.Next(3) switch
    {
        0 => (ushort)rnd.Next(8),
        1 => (ushort)rnd.Next(0x10000),
        _ => (ushort)(rnd.Next(8) | (rnd.Next(2) * VirtqueueLayout.PackedFlagAvail) | (rnd.Next(2) * VirtqueueLayout.PackedFlagUsed)),
    };

    private static void MutateSplit(Random rnd, GuestRam ram, SplitCase sc)
    {
        int size = sc.Ring.Size;
        int count = 1 + rnd.Next(4);
        for (int m = 0; m < count; m++)
        {
            ulong d = DescGpa + ((ulong)rnd.Next(size) * 16);
            switch (rnd.Next(8))
            {
                case 0:
                    ram.Bytes(DescGpa + (ulong)rnd.Next(size * 16), 1)[0] = (byte)rnd.Next(256);
                    break;
                case 1:
                    ram.W64(d, InterestingAddr(rnd));
                    break;
                case 2:
                    ram.W32(d + 8, InterestingLen(rnd));
                    break;
                case 3:
                    ram.W16(d + 12, InterestingFlags(rnd));
                    break;
                case 4:
                    ram.W16(d + 14, InterestingIndex(rnd, size));
                    break;
                case 5 when sc.Alloc.Table > TableStart:
                    ram.Bytes(TableStart + (ulong)rnd.Next((int)(sc.Alloc.Table - TableStart)), 1)[0] = (byte)rnd.Next(256);
                    break;
                case 6:
                    ram.W16(AvailGpa + 4 + (2 * (ulong)rnd.Next(size)), InterestingIndex(rnd, size));
                    break;
                default:
                    ram.W16(AvailGpa + 2, rnd.Next(2) == 0 ? (ushort)(sc.Start + rnd.Next(-2, size + 3)) : (ushort)rnd.Next(0x10000));
                    break;
            }
        }
    }

    /// <summary>Pops in lockstep with the reference walker; completes chains immediately, later, or all at the end.</summary>
    private static int RunSplit(Random rnd, GuestRam ram, SplitCase sc, bool strict)
    {
        var ring = sc.Ring;
        int size = ring.Size;
        var q = ring.Queue(indirect: sc.Feature, nextAvail: sc.Start);
        var inFlight = new bool[size];
        ushort last = sc.Start;
        ushort usedIdx = ring.UsedIdx;
        byte[] image = ram.Snapshot();
        var pending = new List<(DescriptorChain Chain, ModelOutcome Model)>();
        int popped = 0;

        void Complete(int which)
        {
            var (c, m) = pending[which];
            pending.RemoveAt(which);
            byte[] data = RandomBytes(rnd, c.WritableLength);
            c.WriteWritable(0, data).Should().Be(c.WritableLength);
            RingModel.Scatter(ram, image, m.Segs!, data);
            int len = rnd.Next(c.WritableLength + 1);
            bool broken = q.IsBroken;
            q.Push(c, len);
            inFlight[m.Head] = false;
            if (!broken)
            {
                int slot = usedIdx % size;
                BinaryPrimitives.WriteUInt32LittleEndian(image.AsSpan((int)ram.FileOffset(UsedGpa + 4 + (8 * (ulong)slot))), m.Head);
                BinaryPrimitives.WriteUInt32LittleEndian(image.AsSpan((int)ram.FileOffset(UsedGpa + 8 + (8 * (ulong)slot))), (uint)len);
                usedIdx++;
                BinaryPrimitives.WriteUInt16LittleEndian(image.AsSpan((int)ram.FileOffset(UsedGpa + 2)), usedIdx);
            }

            RingModel.ShouldEqualImage(ram, image, $"after pushing head {m.Head} (broken: {broken})");
        }

        for (int step = 0; step <= size + 1; step++)
        {
            var model = RingModel.Split(ram, size, DescGpa, AvailGpa, last, inFlight, sc.Feature);
            bool got = q.TryPop(out var chain);
            RingModel.ShouldEqualImage(ram, image, "popping writes nothing");
            if (model.Kind == ModelKind.None)
            {
                got.Should().BeFalse();
                q.IsBroken.Should().BeFalse();
                break;
            }

            if (model.Kind == ModelKind.Bad || (model.Kind == ModelKind.Either && !got))
            {
                got.Should().BeFalse($"the reference walker says: {model.Why}");
                q.IsBroken.Should().BeTrue();
                q.TryPop(out _).Should().BeFalse();
                break;
            }

            got.Should().BeTrue(q.BrokenReason);
            chain!.Head.Should().Be(model.Head);
            chain.ReadableLength.Should().Be(model.Readable);
            chain.WritableLength.Should().Be(model.Writable);
            var read = new byte[chain.ReadableLength];
            chain.ReadReadable(0, read).Should().Be(read.Length);
            read.Should().Equal(RingModel.Gather(ram, model.Segs!));
            if (strict)
            {
                var (head, elems) = sc.Chains[popped];
                chain.Head.Should().Be(head, "chains are popped in avail order");
                chain.ReadableLength.Should().Be(elems.Where(e => !e.Write).Sum(e => (int)e.Len));
                chain.WritableLength.Should().Be(elems.Where(e => e.Write).Sum(e => (int)e.Len));
                read.Should().Equal(elems.Where(e => !e.Write && e.Len > 0).SelectMany(e => ram.Read(e.Addr, (int)e.Len)));
            }

            popped++;
            last++;
            inFlight[model.Head] = true;
            pending.Add((chain, model));
            if (!strict && rnd.Next(2) == 0)
            {
                Complete(rnd.Next(pending.Count));
            }
        }

        if (strict)
        {
            popped.Should().Be(sc.Chains.Count);
            q.IsBroken.Should().BeFalse();
        }

        while (pending.Count > 0)
        {
            Complete(rnd.Next(pending.Count));
        }

        q.TryPop(out _).Should().BeFalse();
        return popped;
    }

    [Fact]
    public void Random_valid_split_rings_are_popped_exactly_as_laid_out()
    {
        Gen.Int.Sample(seed =>
        {
            var rnd = new Random(seed);
            using var ram = NewRam();
            var sc = BuildSplit(rnd, ram);
            RunSplit(rnd, ram, sc, strict: true);
        }, iter: 300);
    }

    [Fact]
    public void Random_mutations_of_split_rings_never_throw_never_write_outside_the_used_ring_and_pop_or_break()
    {
        Gen.Int.Sample(seed =>
        {
            var rnd = new Random(seed);
            using var ram = NewRam();
            var sc = BuildSplit(rnd, ram);
            MutateSplit(rnd, ram, sc);
            RunSplit(rnd, ram, sc, strict: false);
        }, iter: 1500);
    }

    // ---------------- packed ----------------

    private sealed class PackedCase(PackedRing ring, bool feature, Alloc alloc)
    {
        public PackedRing Ring { get; } = ring;

        public bool Feature { get; } = feature;

        public Alloc Alloc { get; } = alloc;

        public int DevAvail { get; set; } = ring.Next;

        public bool DevAvailWrap { get; set; } = ring.Wrap;

        public int DevUsed { get; set; } = ring.UsedNext;

        public bool DevUsedWrap { get; set; } = ring.UsedWrap;
    }

    private static (PackedCase Case, PackedVirtqueue Queue) NewPacked(Random rnd, GuestRam ram)
    {
        int size = PackedSizes[rnd.Next(PackedSizes.Length)];
        int p = rnd.Next(size);
        bool wrap = rnd.Next(2) == 0;
        var ring = new PackedRing(ram, size, DescGpa, AvailGpa, UsedGpa) { Next = p, Wrap = wrap, UsedNext = p, UsedWrap = wrap };
        for (int s = 0; s < size; s++)
        {
            // History of a resumed ring: slots before p were used in this lap, the rest in the previous one.
            bool lap = s < p ? wrap : !wrap;
            ram.W16(ring.RingGpa + ((ulong)s * 16) + 14, lap ? (ushort)(VirtqueueLayout.PackedFlagAvail | VirtqueueLayout.PackedFlagUsed) : (ushort)0);
        }

        uint @base = (uint)p | (wrap ? 0x8000u : 0);
        if (rnd.Next(3) != 0)
        {
            @base |= @base << 16; // QEMU style; otherwise DPDK style (used = avail)
        }

        bool feature = rnd.Next(2) == 0;
        var q = ring.Queue(@base, indirect: feature);
        return (new PackedCase(ring, feature, new Alloc(rnd, ram)), q);
    }

    /// <summary>Makes a random batch of buffers available; returns them in ring order.</summary>
    private static List<(ushort Id, Elem[] Elems, int Slots)> PostPacked(Random rnd, GuestRam ram, PackedCase pc, bool[] inFlight)
    {
        var ring = pc.Ring;
        int size = ring.Size;
        int free = size - inFlight.Count(x => x); // slots in flight ≤ ids in flight... use the conservative bound below
        var freeIds = Shuffle(rnd, size).Where(i => !inFlight[i]).ToList();
        var posted = new List<(ushort, Elem[], int)>();
        free = Math.Min(free, size);
        while (free > 0 && freeIds.Count > 0 && !pc.Alloc.Full)
        {
            ushort id = (ushort)freeIds[^1];
            freeIds.RemoveAt(freeIds.Count - 1);
            if (pc.Feature && rnd.Next(2) == 0)
            {
                int n = 1 + rnd.Next(Math.Min(5, size));
                Elem[] elems = Elems(rnd, pc.Alloc, n);
                ulong t = pc.Alloc.TableFor(n);
                for (int k = 0; k < n; k++)
                {
                    PackedRing.WriteIndirect(ram, t, k, elems[k], (ushort)rnd.Next(0x10000));
                    if (rnd.Next(4) == 0)
                    {
                        ram.W16(t + ((ulong)k * 16) + 14, (ushort)(ram.R16(t + ((ulong)k * 16) + 14) | N)); // reserved in tables: ignored
                    }
                }

                ring.PostIndirect(id, t, (uint)n * 16, rnd.Next(2) == 0 ? W : (ushort)0);
                posted.Add((id, elems, 1));
                free--;
            }
            else
            {
                int n = 1 + rnd.Next(Math.Min(4, free));
                Elem[] elems = Elems(rnd, pc.Alloc, n);
                ushort[] ids = [.. Enumerable.Repeat(id, n)];
                if (n > 1 && freeIds.Count > 0 && rnd.Next(4) == 0)
                {
                    ids[0] = (ushort)freeIds[rnd.Next(freeIds.Count)]; // only the last descriptor's id counts
                }

                ring.PostWithIds(ids, elems, 0);
                posted.Add((id, elems, n));
                free -= n;
            }

            if (rnd.Next(4) == 0)
            {
                break;
            }
        }

        return posted;
    }

    private static void RunPacked(Random rnd, GuestRam ram, PackedCase pc, PackedVirtqueue q, List<(ushort Id, Elem[] Elems, int Slots)>? expected, bool[] inFlight)
    {
        var ring = pc.Ring;
        int size = ring.Size;
        byte[] image = ram.Snapshot();
        var pending = new List<(DescriptorChain Chain, ModelOutcome Model)>();
        var pushedOrder = new List<(ushort Id, uint Len)>();
        int popped = 0;

        void Complete(int which)
        {
            var (c, m) = pending[which];
            pending.RemoveAt(which);
            byte[] data = RandomBytes(rnd, c.WritableLength);
            c.WriteWritable(0, data).Should().Be(c.WritableLength);
            RingModel.Scatter(ram, image, m.Segs!, data);
            int len = rnd.Next(c.WritableLength + 1);
            bool broken = q.IsBroken;
            q.Push(c, len);
            inFlight[m.Head] = false;
            if (!broken)
            {
                int off = (int)ram.FileOffset(ring.RingGpa + ((ulong)pc.DevUsed * 16));
                BinaryPrimitives.WriteUInt32LittleEndian(image.AsSpan(off + 8), (uint)len);
                BinaryPrimitives.WriteUInt16LittleEndian(image.AsSpan(off + 12), m.Head);
                ushort flags = (ushort)((pc.DevUsedWrap ? VirtqueueLayout.PackedFlagAvail | VirtqueueLayout.PackedFlagUsed : 0) | (len > 0 ? W : 0));
                BinaryPrimitives.WriteUInt16LittleEndian(image.AsSpan(off + 14), flags);
                pc.DevUsed += m.Slots;
                if (pc.DevUsed >= size)
                {
                    pc.DevUsed -= size;
                    pc.DevUsedWrap = !pc.DevUsedWrap;
                }

                pushedOrder.Add((m.Head, (uint)len));
            }

            if (expected is null || pending.Count == 0)
            {
                RingModel.ShouldEqualImage(ram, image, $"after pushing id {m.Head} (broken: {broken})");
            }
        }

        for (int step = 0; step <= (2 * size) + 2; step++)
        {
            var model = RingModel.Packed(ram, size, ring.RingGpa, pc.DevAvail, pc.DevAvailWrap, inFlight, pc.Feature);
            bool got = q.TryPop(out var chain);
            if (expected is null || !got)
            {
                RingModel.ShouldEqualImage(ram, image, "popping writes nothing");
            }

            if (model.Kind == ModelKind.None)
            {
                got.Should().BeFalse();
                q.IsBroken.Should().BeFalse();
                break;
            }

            if (model.Kind == ModelKind.Bad || (model.Kind == ModelKind.Either && !got))
            {
                got.Should().BeFalse($"the reference walker says: {model.Why}");
                q.IsBroken.Should().BeTrue();
                q.TryPop(out _).Should().BeFalse();
                break;
            }

            got.Should().BeTrue(q.BrokenReason);
            chain!.Head.Should().Be(model.Head);
            chain.DescriptorSlots.Should().Be(model.Slots);
            chain.ReadableLength.Should().Be(model.Readable);
            chain.WritableLength.Should().Be(model.Writable);
            var read = new byte[chain.ReadableLength];
            chain.ReadReadable(0, read).Should().Be(read.Length);
            read.Should().Equal(RingModel.Gather(ram, model.Segs!));
            if (expected is not null)
            {
                var (id, elems, slots) = expected[popped];
                chain.Head.Should().Be(id);
                chain.DescriptorSlots.Should().Be(slots);
                chain.ReadableLength.Should().Be(elems.Where(e => !e.Write).Sum(e => (int)e.Len));
                chain.WritableLength.Should().Be(elems.Where(e => e.Write).Sum(e => (int)e.Len));
                read.Should().Equal(elems.Where(e => !e.Write && e.Len > 0).SelectMany(e => ram.Read(e.Addr, (int)e.Len)));
            }

            popped++;
            pc.DevAvail += model.Slots;
            if (pc.DevAvail >= size)
            {
                pc.DevAvail -= size;
                pc.DevAvailWrap = !pc.DevAvailWrap;
            }

            inFlight[model.Head] = true;
            pending.Add((chain, model));
            if (expected is null && rnd.Next(2) == 0)
            {
                Complete(rnd.Next(pending.Count));
            }
        }

        if (expected is not null)
        {
            popped.Should().Be(expected.Count);
            q.IsBroken.Should().BeFalse();
        }

        while (pending.Count > 0)
        {
            Complete(rnd.Next(pending.Count));
        }

        q.TryPop(out _).Should().BeFalse();
        if (expected is not null)
        {
            foreach (var (id, len) in pushedOrder)
            {
                ring.TryTakeUsed(out ushort uid, out uint ulen, out ushort uflags).Should().BeTrue();
                (uid, ulen).Should().Be((id, len), "used descriptors appear in completion order");
                ((uflags & W) != 0).Should().Be(len > 0);
            }

            ring.TryTakeUsed(out _, out _, out _).Should().BeFalse();
            uint expectedBase = (uint)ring.Next | (ring.Wrap ? 0x8000u : 0) | ((uint)ring.UsedNext << 16) | (ring.UsedWrap ? 0x8000_0000u : 0);
            q.Base.Should().Be(expectedBase);
        }
    }

    [Fact]
    public void Random_valid_packed_rings_are_popped_exactly_as_laid_out_over_three_laps()
    {
        Gen.Int.Sample(seed =>
        {
            var rnd = new Random(seed);
            using var ram = NewRam();
            var (pc, q) = NewPacked(rnd, ram);
            int size = pc.Ring.Size;
            var inFlight = new bool[size];
            int slots = 0;
            for (int round = 0; round < 3 || slots < 3 * size; round++)
            {
                if (pc.Alloc.Full)
                {
                    pc.Alloc.Reset();
                }

                var posted = PostPacked(rnd, ram, pc, inFlight);
                slots += posted.Sum(p => p.Slots);
                RunPacked(rnd, ram, pc, q, posted, inFlight);
            }
        }, iter: 250);
    }

    [Fact]
    public void Random_mutations_of_packed_rings_never_throw_never_write_outside_the_ring_and_pop_or_break()
    {
        Gen.Int.Sample(seed =>
        {
            var rnd = new Random(seed);
            using var ram = NewRam();
            var (pc, q) = NewPacked(rnd, ram);
            int size = pc.Ring.Size;
            var inFlight = new bool[size];
            PostPacked(rnd, ram, pc, inFlight);
            int count = 1 + rnd.Next(4);
            for (int m = 0; m < count; m++)
            {
                int slot = rnd.Next(4) == 0 ? rnd.Next(size) : (pc.DevAvail + rnd.Next(Math.Min(size, 6))) % size;
                ulong d = pc.Ring.RingGpa + ((ulong)slot * 16);
                switch (rnd.Next(8))
                {
                    case 0:
                        ram.Bytes(d + (ulong)rnd.Next(16), 1)[0] = (byte)rnd.Next(256);
                        break;
                    case 1:
                        ram.W64(d, InterestingAddr(rnd));
                        break;
                    case 2:
                        ram.W32(d + 8, InterestingLen(rnd));
                        break;
                    case 3:
                        ram.W16(d + 12, InterestingIndex(rnd, size));
                        break;
                    case 4:
                        ram.W16(d + 14, InterestingFlags(rnd));
                        break;
                    case 5:
                        ram.W16(d + 14, (ushort)(ram.R16(d + 14) ^ (rnd.Next(2) == 0 ? VirtqueueLayout.PackedFlagAvail : VirtqueueLayout.PackedFlagUsed))); // D20
                        break;
                    case 6 when pc.Alloc.Table > TableStart:
                        ram.Bytes(TableStart + (ulong)rnd.Next((int)(pc.Alloc.Table - TableStart)), 1)[0] = (byte)rnd.Next(256);
                        break;
                    default:
                        ram.W16(d + 14, (ushort)(ram.R16(d + 14) ^ (1 << rnd.Next(3)))); // NEXT / WRITE / INDIRECT
                        break;
                }
            }

            RunPacked(rnd, ram, pc, q, null, inFlight);
        }, iter: 1500);
    }
}
