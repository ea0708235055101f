using VhostCompat.Queues;

namespace VhostCompat.Tests.Queues;

/// <summary>
/// Indirect tables and buffers that lie across GPA-adjacent regions whose host mappings are unrelated (a guest with
/// several memory slots produces them) are legal: the SDK reads tables piecewise and gathers data across the boundary.
/// Memory: three regions A = [0x10000, 0x18000) at file offset 0x1000, B = [0x18000, 0x1C000) at 0xA000 and
/// C = [0x1C000, 0x20000) at 0xF000, each mapped separately, with canary pages between them in the file.
/// </summary>
public sealed class IndirectAcrossRegionsTests : IDisposable
{
    private const int RingSize = 16;
    private const ulong AB = 0x18000;           // boundary between A and B: the tables straddle it
    private const ulong CrossingBuffer = 0x1BFF0; // 32 bytes across the B/C boundary
    private const ulong Buffers = 0x1D000;
    private const ulong Writable = 0x1E000;
    private const ushort I = VirtqueueLayout.DescFlagIndirect;
    private const ushort N = VirtqueueLayout.DescFlagNext;
    private const ushort W = VirtqueueLayout.DescFlagWrite;

    private readonly GuestRam _ram = new(0x14000, new RegionSpec(0x10000, 0x8000, 0x1000), new RegionSpec(0x18000, 0x4000, 0xA000), new RegionSpec(0x1C000, 0x4000, 0xF000));

    public void Dispose() => _ram.Dispose();

    public static TheoryData<bool, int, int> Cases()
    {
        var data = new TheoryData<bool, int, int>();
        foreach (bool packed in new[] { false, true })
        {
            for (int entries = 1; entries <= RingSize; entries++)
            {
                // How many bytes of the table lie before the boundary: one entry, half an entry (a descriptor split in
                // two), all but the last entry, and a single byte.
                foreach (int before in new[] { 16, 8, Math.Max(1, (entries - 1) * 16), 1 }.Distinct())
                {
                    if (before < entries * 16)
                    {
                        data.Add(packed, entries, before);
                    }
                }
            }
        }

        return data;
    }

    /// <summary>The chain's elements: a readable buffer across B/C, readable buffers in C, and (from 2 entries) a writable one last.</summary>
    private static Elem[] Elements(int entries)
    {
        var e = new Elem[entries];
        e[0] = new Elem(CrossingBuffer, 32);
        for (int i = 1; i < entries; i++)
        {
            e[i] = i == entries - 1 ? new Elem(Writable, 32, Write: true) : new Elem(Buffers + ((ulong)i * 0x20), 16);
        }

        return e;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void An_indirect_table_across_a_region_boundary_is_read_piecewise_and_its_buffers_gathered(bool packed, int entries, int before)
    {
        ulong table = AB - (ulong)before;
        uint tableLength = (uint)(entries * 16);
        _ram.InOneRegion(table, tableLength).Should().BeFalse("the case must straddle the boundary");
        Elem[] elems = Elements(entries);
        var expected = new List<byte>();
        for (int i = 0; i < elems.Length; i++)
        {
            if (!elems[i].Write)
            {
                var bytes = Enumerable.Range(0, (int)elems[i].Len).Select(b => (byte)((i * 31) + b + 1)).ToArray();
                _ram.Write(elems[i].Addr, bytes);
                expected.AddRange(bytes);
            }
        }

        Virtqueue q;
        if (packed)
        {
            for (int i = 0; i < elems.Length; i++)
            {
                PackedRing.WriteIndirect(_ram, table, i, elems[i]);
            }

            var ring = new PackedRing(_ram, RingSize);
            ring.PostIndirect(7, table, tableLength);
            q = ring.Queue(indirect: true);
        }
        else
        {
            for (int i = 0; i < elems.Length; i++)
            {
                ushort flags = (ushort)((elems[i].Write ? W : 0) | (i + 1 < elems.Length ? N : 0));
                SplitRing.WriteDesc(_ram, table, i, elems[i].Addr, elems[i].Len, flags, (ushort)(i + 1));
            }

            var ring = new SplitRing(_ram, RingSize);
            ring.Desc(7, table, tableLength, I);
            ring.Offer(7);
            q = ring.Queue(indirect: true);
        }

        q.TryPop(out var chain).Should().BeTrue(q.BrokenReason ?? "the chain is valid");
        chain!.Head.Should().Be(7);
        chain.ReadableLength.Should().Be(expected.Count);
        var read = new byte[expected.Count];
        chain.ReadReadable(0, read).Should().Be(expected.Count);
        read.Should().Equal(expected, "the readable bytes are gathered across the B/C boundary in order");
        int written = 0;
        if (entries >= 2)
        {
            chain.WritableLength.Should().Be(32);
            var reply = Enumerable.Range(0, 32).Select(b => (byte)(0xA0 + b)).ToArray();
            chain.WriteWritable(0, reply).Should().Be(32);
            _ram.Read(Writable, 32).Should().Equal(reply);
            written = 32;
        }
        else
        {
            chain.WritableLength.Should().Be(0);
        }

        q.Push(chain, written);
        q.IsBroken.Should().BeFalse();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void An_indirect_table_running_past_the_last_region_still_breaks_the_queue(bool packed)
    {
        ulong table = 0x20000 - 16;
        Virtqueue q;
        if (packed)
        {
            var ring = new PackedRing(_ram, RingSize);
            ring.PostIndirect(1, table, 32);
            q = ring.Queue(indirect: true);
        }
        else
        {
            var ring = new SplitRing(_ram, RingSize);
            ring.Desc(1, table, 32, I);
            ring.Offer(1);
            q = ring.Queue(indirect: true);
        }

        byte[] before = _ram.Snapshot();
        q.TryPop(out _).Should().BeFalse();
        q.BrokenReason.Should().Contain("is not inside guest memory");
        _ram.ShouldBeUnchangedExcept(before);
    }
}
