using VhostCompat.Interop;
using VhostCompat.Memory;
using VhostCompat.Protocol;
using VhostCompat.Queues;
using VhostCompat.Tests.Support;

namespace VhostCompat.Tests.Queues;

/// <summary>
/// Split rings laid out by hand in a memfd (PROTOCOL.md §11.5; HOSTILE-INPUTS D1–D15, D25).
/// Memory: one region GPA 0x10000–0x20000 with a guard page either side; desc table at 0x10000,
/// avail at 0x11000, used at 0x12000, buffers from 0x14000. Every test diffs the whole file
/// (guards included) against a snapshot: only the used ring and written buffers may change.
/// </summary>
public sealed class SplitVirtqueueTests : IDisposable
{
    private const ulong Data = 0x14000;
    private const ushort N = VirtqueueLayout.DescFlagNext;
    private const ushort W = VirtqueueLayout.DescFlagWrite;
    private const ushort I = VirtqueueLayout.DescFlagIndirect;

    private readonly GuestRam _ram = GuestRam.Single();

    public void Dispose() => _ram.Dispose();

    private static byte[] Pattern(int length, int seed)
    {
        var b = new byte[length];
        new Random(seed).NextBytes(b);
        return b;
    }

    private static DescriptorChain Pop(Virtqueue q)
    {
        q.TryPop(out var chain).Should().BeTrue(q.BrokenReason ?? "a chain is available");
        return chain!;
    }

    private static void ShouldBreak(Virtqueue q, string because)
    {
        q.TryPop(out var chain).Should().BeFalse();
        chain.Should().BeNull();
        q.IsBroken.Should().BeTrue();
        q.BrokenReason.Should().Contain(because);
    }

    // ---- well-formed chains ----

    [Fact]
    public void A_single_readable_descriptor_is_popped_read_and_pushed()
    {
        var ring = new SplitRing(_ram, 8);
        byte[] payload = Pattern(100, 1);
        _ram.Write(Data, payload);
        ring.Desc(0, Data, 100);
        ring.Offer(0);
        var q = ring.Queue();
        byte[] before = _ram.Snapshot();

        var c = Pop(q);
        c.Head.Should().Be(0);
        c.ReadableLength.Should().Be(100);
        c.WritableLength.Should().Be(0);
        var buf = new byte[128];
        c.ReadReadable(0, buf).Should().Be(100);
        buf[..100].Should().Equal(payload);
        q.Base.Should().Be(1u);
        q.TryPop(out _).Should().BeFalse("only one head was made available");
        q.IsBroken.Should().BeFalse();

        q.Push(c, 0);
        ring.UsedIdx.Should().Be(1);
        ring.Used(0).Should().Be((0u, 0u));
        q.CompletedChains.Should().Be(1);
        _ram.ShouldBeUnchangedExcept(before, ring.UsedWritable);
    }

    [Fact]
    public void A_multi_descriptor_chain_reads_and_writes_across_segments_with_offsets()
    {
        var ring = new SplitRing(_ram, 8);
        byte[] r1 = Pattern(10, 2), r2 = Pattern(20, 3);
        _ram.Write(Data, r1);
        _ram.Write(Data + 0x100, r2);
        ring.Chain([3, 6, 1, 7], new Elem(Data, 10), new Elem(Data + 0x100, 20), new Elem(Data + 0x200, 8, true), new Elem(Data + 0x300, 16, true));
        ring.Offer(3);
        var q = ring.Queue();
        byte[] before = _ram.Snapshot();

        var c = Pop(q);
        c.Head.Should().Be(3);
        c.ReadableLength.Should().Be(30);
        c.WritableLength.Should().Be(24);
        byte[] readable = [.. r1, .. r2];

        var part = new byte[10];
        c.ReadReadable(5, part).Should().Be(10, "bytes 5..15 span both readable segments");
        part.Should().Equal(readable[5..15]);
        var tail = new byte[100];
        c.ReadReadable(25, tail).Should().Be(5, "only 5 readable bytes remain after offset 25");
        tail[..5].Should().Equal(readable[25..]);
        c.ReadReadable(30, tail).Should().Be(0);
        c.ReadReadable(1000, tail).Should().Be(0);
        FluentActions.Invoking(() => c.ReadReadable(-1, tail)).Should().Throw<ArgumentOutOfRangeException>();

        byte[] w = Pattern(10, 4);
        c.WriteWritable(6, w).Should().Be(10);
        _ram.Read(Data + 0x206, 2).Should().Equal(w[..2]);
        _ram.Read(Data + 0x300, 8).Should().Equal(w[2..]);
        c.WriteWritable(20, Pattern(10, 5)).Should().Be(4, "the writable part ends at 24");
        c.WriteWritable(24, Pattern(10, 6)).Should().Be(0);
        FluentActions.Invoking(() => c.WriteWritable(-1, w)).Should().Throw<ArgumentOutOfRangeException>();

        q.Push(c, 24);
        ring.Used(0).Should().Be((3u, 24u));
        ring.UsedIdx.Should().Be(1);
        _ram.ShouldBeUnchangedExcept(before, ring.UsedWritable, _ram.Range(Data + 0x206, 2), _ram.Range(Data + 0x300, 16));
        _ram.Read(Data, 10).Should().Equal(r1, "the device never writes a readable buffer");
    }

    [Fact]
    public void Chains_are_popped_in_avail_order_and_may_be_pushed_out_of_order()
    {
        var ring = new SplitRing(_ram, 8);
        ring.Desc(5, Data, 1, W);
        ring.Desc(2, Data + 0x10, 2, W);
        ring.Desc(7, Data + 0x20, 3, W);
        ring.Offer(5, 2, 7);
        var q = ring.Queue();
        var a = Pop(q);
        var b = Pop(q);
        var c = Pop(q);
        (a.Head, b.Head, c.Head).Should().Be(((ushort)5, (ushort)2, (ushort)7));
        q.Push(b, 2);
        q.Push(c, 0);
        q.Push(a, 1);
        ring.Used(0).Should().Be((2u, 2u));
        ring.Used(1).Should().Be((7u, 0u));
        ring.Used(2).Should().Be((5u, 1u));
        ring.UsedIdx.Should().Be(3);
    }

    [Fact]
    public void Free_running_indices_wrap_at_65536()
    {
        var ring = new SplitRing(_ram, 8);
        ring.UsedIdx = 0xFFFE;
        ring.AvailIdx = 0xFFFE;
        for (int i = 1; i <= 4; i++)
        {
            ring.Desc(i, Data + (ulong)(i * 0x10), 16, W);
        }

        ring.Offer(1, 2, 3, 4);
        ring.AvailIdx.Should().Be(2);
        var q = ring.Queue(nextAvail: 0xFFFE);
        for (int i = 1; i <= 4; i++)
        {
            var c = Pop(q);
            c.Head.Should().Be((ushort)i, "avail slots 6, 7, 0, 1 hold heads 1..4");
            q.Push(c, i);
        }

        q.TryPop(out _).Should().BeFalse();
        q.Base.Should().Be(2u);
        ring.UsedIdx.Should().Be(2);
        ring.Used(6).Should().Be((1u, 1u));
        ring.Used(7).Should().Be((2u, 2u));
        ring.Used(0).Should().Be((3u, 3u));
        ring.Used(1).Should().Be((4u, 4u));
    }

    [Fact]
    public void Zero_length_descriptors_are_skipped_without_translating_their_address()
    {
        var ring = new SplitRing(_ram, 8);
        ring.Chain([0, 1, 2, 3], new Elem(0xDEAD_0000_0000, 0), new Elem(Data, 4), new Elem(ulong.MaxValue, 0, true), new Elem(0, 0, true));
        ring.Offer(0);
        var q = ring.Queue();
        var c = Pop(q);
        c.ReadableLength.Should().Be(4);
        c.WritableLength.Should().Be(0);
        q.Push(c, 0);
        q.IsBroken.Should().BeFalse();
    }

    [Fact]
    public void A_chain_of_exactly_size_descriptors_is_legal()
    {
        var ring = new SplitRing(_ram, 16);
        for (int i = 0; i < 16; i++)
        {
            ring.Desc(i, Data + (ulong)(i * 0x10), 16, i < 15 ? N : (ushort)0, (ushort)(i + 1));
        }

        ring.Offer(0);
        var c = Pop(ring.Queue());
        c.ReadableLength.Should().Be(256);
    }

    [Fact]
    public void Ring_structures_outside_guest_memory_are_rejected_at_construction()
    {
        var ring = new SplitRing(_ram, 8);
        FluentActions.Invoking(() => new SplitVirtqueue(0, 8, _ram.Table, 0x1000, GuestRam.Ua(ring.AvailGpa), GuestRam.Ua(ring.UsedGpa), 0, false, false))
            .Should().Throw<ArgumentException>();
        FluentActions.Invoking(() => new SplitVirtqueue(0, 8, _ram.Table, GuestRam.Ua(ring.DescGpa), GuestRam.Ua(ring.AvailGpa), GuestRam.Ua(0x1FFF0), 0, false, false))
            .Should().Throw<ArgumentException>("the used ring (70 bytes) would run past the end of the region");
        FluentActions.Invoking(() => new SplitVirtqueue(0, 8, _ram.Table, ring.DescGpa, ring.AvailGpa, ring.UsedGpa, 0, false, false))
            .Should().Throw<ArgumentException>("ring addresses are frontend virtual, not guest physical");
    }

    // ---- indirect tables ----

    [Theory]
    [InlineData(0UL)]
    [InlineData(3UL)] // unaligned table address: the spec sets no alignment (D5)
    public void A_valid_indirect_table_is_walked_by_its_next_links(ulong misalign)
    {
        var ring = new SplitRing(_ram, 4);
        ulong table = Data + 0x1000 + misalign;
        byte[] r = Pattern(8, 7);
        _ram.Write(Data, r);
        SplitRing.WriteDesc(_ram, table, 0, Data, 8, N, 2);
        SplitRing.WriteDesc(_ram, table, 1, 0xDEAD_BEEF, 99, I, 7); // never reached
        SplitRing.WriteDesc(_ram, table, 2, Data + 0x100, 16, W, 0);
        ring.Desc(0, table, 48, I | W); // WRITE on the referring descriptor is ignored (D7)
        ring.Offer(0);
        var q = ring.Queue(indirect: true);
        byte[] before = _ram.Snapshot();

        var c = Pop(q);
        c.Head.Should().Be(0);
        c.ReadableLength.Should().Be(8);
        c.WritableLength.Should().Be(16);
        var buf = new byte[8];
        c.ReadReadable(0, buf);
        buf.Should().Equal(r);
        c.WriteWritable(0, Pattern(16, 8)).Should().Be(16);
        _ram.Read(Data + 0x100, 16).Should().Equal(Pattern(16, 8));
        q.Push(c, 16);
        ring.Used(0).Should().Be((0u, 16u));
        _ram.ShouldBeUnchangedExcept(before, ring.UsedWritable, _ram.Range(Data + 0x100, 16));
    }

    [Fact]
    public void Direct_descriptors_followed_by_one_indirect_descriptor_are_gathered_in_order()
    {
        var ring = new SplitRing(_ram, 4);
        ulong table = Data + 0x1000;
        SplitRing.WriteDesc(_ram, table, 0, Data + 0x10, 6, 0, 0);
        SplitRing.WriteDesc(_ram, table, 1, Data + 0x100, 8, W, 0); // not linked: ignored
        ring.Desc(2, Data, 4, N, 3);
        ring.Desc(3, table, 32, I);
        byte[] all = Pattern(32, 9);
        _ram.Write(Data, all);
        ring.Offer(2);
        var c = Pop(ring.Queue(indirect: true));
        c.ReadableLength.Should().Be(10);
        c.WritableLength.Should().Be(0);
        var buf = new byte[10];
        c.ReadReadable(0, buf).Should().Be(10);
        buf.Should().Equal([.. all[..4], .. all[0x10..0x16]]);
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(15u)]
    [InlineData(17u)]
    [InlineData(24u)]
    public void An_indirect_table_length_that_is_zero_or_not_a_multiple_of_16_breaks_the_queue(uint len)
    {
        var ring = new SplitRing(_ram, 4);
        SplitRing.WriteDesc(_ram, Data + 0x1000, 0, Data, 4, 0, 0);
        ring.Desc(0, Data + 0x1000, len, I);
        ring.Offer(0);
        byte[] before = _ram.Snapshot();
        ShouldBreak(ring.Queue(indirect: true), "indirect table length");
        _ram.ShouldBeUnchangedExcept(before);
    }

    [Theory]
    [InlineData(0x1_0000_0000UL, 16u)]
    [InlineData(0x1FFF0UL, 32u)] // runs past the end of the region
    [InlineData(0xFFFF_FFFF_FFFF_FFF0UL, 32u)] // wraps
    public void An_indirect_table_outside_guest_memory_breaks_the_queue(ulong addr, uint len)
    {
        var ring = new SplitRing(_ram, 4);
        ring.Desc(0, addr, len, I);
        ring.Offer(0);
        ShouldBreak(ring.Queue(indirect: true), "is not inside guest memory");
    }

    [Fact]
    public void A_nested_indirect_descriptor_breaks_the_queue()
    {
        var ring = new SplitRing(_ram, 4);
        SplitRing.WriteDesc(_ram, Data + 0x1000, 0, Data + 0x1000, 16, I, 0);
        ring.Desc(0, Data + 0x1000, 16, I);
        ring.Offer(0);
        ShouldBreak(ring.Queue(indirect: true), "nested");
    }

    [Fact]
    public void Indirect_combined_with_next_breaks_the_queue()
    {
        var ring = new SplitRing(_ram, 4);
        SplitRing.WriteDesc(_ram, Data + 0x1000, 0, Data, 4, 0, 0);
        ring.Desc(0, Data + 0x1000, 16, I | N, 1);
        ring.Desc(1, Data, 4);
        ring.Offer(0);
        ShouldBreak(ring.Queue(indirect: true), "NEXT");
    }

    [Fact]
    public void Indirect_without_the_negotiated_feature_breaks_the_queue()
    {
        var ring = new SplitRing(_ram, 4);
        SplitRing.WriteDesc(_ram, Data + 0x1000, 0, Data, 4, 0, 0);
        ring.Desc(0, Data + 0x1000, 16, I);
        ring.Offer(0);
        ShouldBreak(ring.Queue(indirect: false), "INDIRECT_DESC");
    }

    [Fact]
    public void A_loop_inside_an_indirect_table_breaks_the_queue()
    {
        var ring = new SplitRing(_ram, 4);
        SplitRing.WriteDesc(_ram, Data + 0x1000, 0, Data, 4, N, 1);
        SplitRing.WriteDesc(_ram, Data + 0x1000, 1, Data, 4, N, 0);
        ring.Desc(0, Data + 0x1000, 32, I);
        ring.Offer(0);
        ShouldBreak(ring.Queue(indirect: true), "loop");
    }

    [Fact]
    public void A_next_index_beyond_the_indirect_table_breaks_the_queue()
    {
        var ring = new SplitRing(_ram, 8);
        SplitRing.WriteDesc(_ram, Data + 0x1000, 0, Data, 4, N, 2); // table has 2 entries
        SplitRing.WriteDesc(_ram, Data + 0x1000, 1, Data, 4, 0, 0);
        ring.Desc(0, Data + 0x1000, 32, I);
        ring.Offer(0);
        ShouldBreak(ring.Queue(indirect: true), "next index 2");
    }

    [Fact]
    public void A_readable_descriptor_in_an_indirect_table_after_a_direct_writable_one_breaks_the_queue()
    {
        var ring = new SplitRing(_ram, 4);
        SplitRing.WriteDesc(_ram, Data + 0x1000, 0, Data, 4, 0, 0);
        ring.Desc(0, Data + 0x100, 4, W | N, 1);
        ring.Desc(1, Data + 0x1000, 16, I);
        ring.Offer(0);
        ShouldBreak(ring.Queue(indirect: true), "device-readable descriptor after a device-writable");
    }

    /// <summary>
    /// BUG (HOSTILE-INPUTS D5): an indirect table longer than 16×size bytes must be a chain error; the walker
    /// accepts up to 32768 entries whatever the ring size (SplitVirtqueue.Walk, VirtqueueLayout.MaxIndirectEntries).
    /// </summary>
    [Fact]
    public void An_indirect_table_with_more_entries_than_the_ring_size_is_a_chain_error()
    {
        var ring = new SplitRing(_ram, 4);
        for (int i = 0; i < 8; i++)
        {
            SplitRing.WriteDesc(_ram, Data + 0x1000, i, Data + (ulong)(i * 0x10), 16, i < 7 ? N : (ushort)0, (ushort)(i + 1));
        }

        ring.Desc(0, Data + 0x1000, 8 * 16, I);
        ring.Offer(0);
        ShouldBreak(ring.Queue(indirect: true), "indirect");
    }

    /// <summary>
    /// BUG (HOSTILE-INPUTS D4): a chain of size+1 buffer descriptors, reachable through a direct prefix plus an
    /// indirect table, must be a chain error; the walker resets its step counter on entering the table.
    /// </summary>
    [Fact]
    public void A_direct_prefix_plus_indirect_table_longer_than_the_ring_is_a_chain_error()
    {
        var ring = new SplitRing(_ram, 4);
        SplitRing.WriteDesc(_ram, Data + 0x1000, 0, Data + 0x100, 16, N, 1);
        SplitRing.WriteDesc(_ram, Data + 0x1000, 1, Data + 0x110, 16, 0, 0);
        ring.Desc(0, Data, 16, N, 1);
        ring.Desc(1, Data + 0x10, 16, N, 2);
        ring.Desc(2, Data + 0x20, 16, N, 3);
        ring.Desc(3, Data + 0x1000, 32, I); // 3 direct + 2 indirect = 5 buffer descriptors > 4
        ring.Offer(0);
        ShouldBreak(ring.Queue(indirect: true), "longer");
    }

    // ---- malformed chains (D1–D3, D10, D13) ----

    public static TheoryData<string, int[]> Loops => new()
    {
        { "self-loop", [0, 0] },
        { "2-cycle", [0, 1, 0] },
        { "cycle of size-1 after a prefix", [0, .. Enumerable.Range(1, 15), 1] },
        { "cycle at the end of a long prefix", [.. Enumerable.Range(0, 15), 14] },
    };

    [Theory]
    [MemberData(nameof(Loops))]
    public void Descriptor_loops_are_detected(string shape, int[] path)
    {
        _ = shape;
        var ring = new SplitRing(_ram, 16);
        for (int k = 0; k + 1 < path.Length; k++)
        {
            ring.Desc(path[k], Data + (ulong)(path[k] * 0x10), 16, N, (ushort)path[k + 1]);
        }

        ring.Offer((ushort)path[0]);
        byte[] before = _ram.Snapshot();
        ShouldBreak(ring.Queue(), "loop");
        _ram.ShouldBeUnchangedExcept(before);
    }

    [Theory]
    [InlineData(8)]
    [InlineData(9)]
    [InlineData(0xFFFF)]
    public void A_next_index_outside_the_table_breaks_the_queue(int next)
    {
        var ring = new SplitRing(_ram, 8);
        ring.Desc(0, Data, 4, N, (ushort)next);
        ring.Offer(0);
        ShouldBreak(ring.Queue(), $"next index {next}");
    }

    [Theory]
    [InlineData(8)]
    [InlineData(9)]
    [InlineData(0xFFFF)]
    public void A_head_index_outside_the_ring_breaks_the_queue(int head)
    {
        var ring = new SplitRing(_ram, 8);
        ring.Offer((ushort)head);
        byte[] before = _ram.Snapshot();
        ShouldBreak(ring.Queue(), $"head index {head}");
        _ram.ShouldBeUnchangedExcept(before);
    }

    [Theory]
    [InlineData(new[] { true, false })]
    [InlineData(new[] { false, true, false })]
    public void A_readable_descriptor_after_a_writable_one_breaks_the_queue(bool[] writes)
    {
        var ring = new SplitRing(_ram, 8);
        ring.Chain([.. Enumerable.Range(0, writes.Length)], [.. writes.Select((w, i) => new Elem(Data + (ulong)(i * 0x10), 16, w))]);
        ring.Offer(0);
        byte[] before = _ram.Snapshot();
        ShouldBreak(ring.Queue(), "device-readable descriptor after a device-writable");
        _ram.ShouldBeUnchangedExcept(before);
    }

    public static TheoryData<ulong, uint, bool> OutsideBuffers => new()
    {
        { 0x1_0000_0000, 16, false }, // unmapped
        { 0x1_0000_0000, 16, true },
        { 0xFFFF_FFFF_FFFF_F000, 0x2000, false }, // addr + len wraps (D10)
        { 0xFFFF_FFFF_FFFF_F000, 0x2000, true },
        { 0x1FFF0, 0xFFFF_FFFF, false }, // near the region end with len 0xFFFFFFFF (D10)
        { 0x1FFF0, 0xFFFF_FFFF, true },
        { 0x1FFF0, 0x11, true }, // one byte past the end into the gap
        { 0xFFF0, 0x20, false }, // starts before the region
        { 0xFFFF_FFFF_FFFF_FFFF, 1, true }, // the very last address
    };

    [Theory]
    [MemberData(nameof(OutsideBuffers))]
    public void A_buffer_outside_guest_memory_breaks_the_queue_without_access(ulong addr, uint len, bool write)
    {
        var ring = new SplitRing(_ram, 8);
        ring.Desc(0, Data, 4, N, 1);
        ring.Desc(1, addr, len, write ? W : (ushort)0);
        ring.Offer(0);
        byte[] before = _ram.Snapshot();
        var q = ring.Queue();
        ShouldBreak(q, "not inside guest memory");
        q.PrepareToSleep().Should().BeFalse();
        _ram.ShouldBeUnchangedExcept(before);
    }

    // ---- avail index and duplicate heads (D14, D15) ----

    [Theory]
    [InlineData(9)]
    [InlineData(0x8000)]
    [InlineData(0xFFFF)]
    public void An_avail_index_more_than_size_ahead_breaks_the_queue(int availIdx)
    {
        var ring = new SplitRing(_ram, 8);
        for (int i = 0; i < 8; i++)
        {
            ring.Desc(i, Data, 4);
        }

        ring.AvailIdx = (ushort)availIdx;
        byte[] before = _ram.Snapshot();
        ShouldBreak(ring.Queue(), "more than the ring size");
        _ram.ShouldBeUnchangedExcept(before);
    }

    [Fact]
    public void Exactly_size_heads_available_are_all_popped()
    {
        var ring = new SplitRing(_ram, 8);
        for (int i = 0; i < 8; i++)
        {
            ring.Desc(i, Data + (ulong)(i * 0x10), 16, W);
        }

        ring.Offer(7, 6, 5, 4, 3, 2, 1, 0);
        var q = ring.Queue();
        var chains = Enumerable.Range(0, 8).Select(_ => Pop(q)).ToList();
        chains.Select(c => (int)c.Head).Should().Equal(7, 6, 5, 4, 3, 2, 1, 0);
        q.TryPop(out _).Should().BeFalse();
        q.IsBroken.Should().BeFalse();
    }

    [Fact]
    public void An_avail_index_moving_backwards_breaks_the_queue()
    {
        var ring = new SplitRing(_ram, 8);
        ring.Desc(0, Data, 4);
        ring.Desc(1, Data, 4);
        ring.Offer(0, 1);
        var q = ring.Queue();
        Pop(q);
        Pop(q);
        ring.AvailIdx = 1;
        ShouldBreak(q, "more than the ring size");
    }

    [Fact]
    public void A_head_made_available_twice_while_in_flight_breaks_the_queue()
    {
        var ring = new SplitRing(_ram, 8);
        ring.Desc(0, Data, 4, W);
        ring.Offer(0, 0);
        var q = ring.Queue();
        var c = Pop(q);
        ShouldBreak(q, "still in flight");
        q.Push(c, 4); // allowed (the chain is ours) but the broken ring is not written
        ring.UsedIdx.Should().Be(0);
    }

    [Fact]
    public void A_head_may_be_reused_once_it_was_pushed()
    {
        var ring = new SplitRing(_ram, 8);
        ring.Desc(0, Data, 4, W);
        ring.Offer(0);
        var q = ring.Queue();
        var c = Pop(q);
        q.Push(c, 1);
        ring.Offer(0);
        var again = Pop(q);
        again.Should().BeSameAs(c, "chains are pooled per head");
        again.WritableLength.Should().Be(4);
        q.Push(again, 2);
        ring.Used(1).Should().Be((0u, 2u));
    }

    // ---- broken queues ----

    [Fact]
    public void A_broken_queue_stays_broken_signals_err_once_and_never_writes_the_used_ring()
    {
        var ring = new SplitRing(_ram, 8);
        ring.Desc(0, Data, 4, W);
        ring.Desc(1, Data + 0x10, 4, W);
        ring.Offer(0);
        var q = ring.Queue(eventIndex: true);
        using var err = FileDescriptor.CreateEventFd();
        using var call = FileDescriptor.CreateEventFd();
        q.SetErr(err);
        q.SetCall(call);
        var reasons = new List<string>();
        q.OnBroken = (_, reason) => reasons.Add(reason);

        var inFlight = Pop(q);
        ring.Offer(9);
        ShouldBreak(q, "head index 9");
        EventFds.Drain(err).Should().Be(1);
        reasons.Should().ContainSingle();

        ring.AvailIdx = 1; // repair the ring and offer a valid head
        ring.Offer(1);
        ring.AvailFlags = 0;
        ring.UsedEvent = 0;
        byte[] before = _ram.Snapshot();
        q.TryPop(out _).Should().BeFalse();
        q.Push(inFlight, 4);
        q.CompletedChains.Should().Be(0);
        q.NotifyGuest();
        q.PrepareToSleep().Should().BeFalse();
        q.TryPop(out _).Should().BeFalse();
        _ram.ShouldBeUnchangedExcept(before);
        EventFds.Drain(call).Should().Be(0);
        EventFds.Drain(err).Should().Be(0, "the error fd is signalled once");
        reasons.Should().ContainSingle();
        q.IsBroken.Should().BeTrue();
    }

    // ---- Push validation ----

    [Theory]
    [InlineData(-1)]
    [InlineData(9)]
    [InlineData(int.MaxValue)]
    public void Push_rejects_a_length_outside_the_writable_part(int length)
    {
        var ring = new SplitRing(_ram, 8);
        ring.Chain([0, 1], new Elem(Data, 100), new Elem(Data + 0x100, 8, true));
        ring.Offer(0);
        var q = ring.Queue();
        var c = Pop(q);
        byte[] before = _ram.Snapshot();
        FluentActions.Invoking(() => q.Push(c, length)).Should().Throw<ArgumentOutOfRangeException>();
        _ram.ShouldBeUnchangedExcept(before);
        q.Push(c, 8);
        ring.Used(0).Should().Be((0u, 8u));
    }

    [Fact]
    public void Push_rejects_a_chain_that_is_not_in_flight_on_this_queue()
    {
        var ring = new SplitRing(_ram, 8);
        ring.Desc(0, Data, 8, W);
        ring.Offer(0);
        var q = ring.Queue();
        var c = Pop(q);
        q.Push(c, 0);
        byte[] before = _ram.Snapshot();
        FluentActions.Invoking(() => q.Push(c, 0)).Should().Throw<InvalidOperationException>("it was pushed already");
        FluentActions.Invoking(() => q.Push(null!, 0)).Should().Throw<ArgumentNullException>();

        using var other = GuestRam.Single();
        var otherRing = new SplitRing(other, 8);
        SplitRing.WriteDesc(other, otherRing.DescGpa, 0, Data, 8, W, 0);
        otherRing.Offer(0);
        var foreign = Pop(otherRing.Queue());
        FluentActions.Invoking(() => q.Push(foreign, 0)).Should().Throw<InvalidOperationException>("the chain belongs to another queue");
        _ram.ShouldBeUnchangedExcept(before);
    }

    // ---- notifications ----

    private (SplitRing Ring, SplitVirtqueue Queue, FileDescriptor Call) NotifySetup(bool eventIndex)
    {
        var ring = new SplitRing(_ram, 8);
        for (int i = 0; i < 8; i++)
        {
            ring.Desc(i, Data + (ulong)(i * 0x10), 16, W);
        }

        var q = ring.Queue(eventIndex: eventIndex);
        var call = FileDescriptor.CreateEventFd();
        q.SetCall(call);
        return (ring, q, call);
    }

    private static void Complete(SplitRing ring, Virtqueue q, int count)
    {
        for (int k = 0; k < count; k++)
        {
            ring.Offer((ushort)((ring.AvailIdx) % 8));
            q.Push(Pop(q), 1);
        }
    }

    [Fact]
    public void PrepareToSleep_publishes_avail_event_with_event_idx_and_rechecks_the_ring()
    {
        var (ring, q, call) = NotifySetup(eventIndex: true);
        using var _ = call;
        ring.Offer(0, 1, 2);
        Pop(q);
        Pop(q);
        Pop(q);
        byte[] before = _ram.Snapshot();
        q.PrepareToSleep().Should().BeFalse();
        ring.AvailEvent.Should().Be(3);
        _ram.ShouldBeUnchangedExcept(before, _ram.Range(ring.UsedGpa + 4 + (8 * 8), 2));
        ring.Offer(3);
        q.PrepareToSleep().Should().BeTrue("a buffer arrived before the worker slept");
    }

    [Fact]
    public void PrepareToSleep_without_event_idx_leaves_avail_event_alone()
    {
        var (ring, q, call) = NotifySetup(eventIndex: false);
        using var _ = call;
        _ram.W16(ring.UsedGpa + 4 + (8 * 8), 0xABCD);
        ring.Offer(0);
        Pop(q);
        byte[] before = _ram.Snapshot();
        q.PrepareToSleep().Should().BeFalse();
        _ram.ShouldBeUnchangedExcept(before);
        ring.AvailEvent.Should().Be(0xABCD);
    }

    [Fact]
    public void NotifyGuest_honours_used_event_with_event_idx()
    {
        var (ring, q, call) = NotifySetup(eventIndex: true);
        using var _ = call;
        ring.AvailFlags = VirtqueueLayout.AvailFlagNoInterrupt; // ignored with EVENT_IDX

        q.NotifyGuest();
        EventFds.Drain(call).Should().Be(0, "nothing was pushed");

        ring.UsedEvent = 0;
        Complete(ring, q, 1); // used 0 -> 1 passes event 0
        q.NotifyGuest();
        EventFds.Drain(call).Should().Be(1);

        ring.UsedEvent = 3;
        Complete(ring, q, 1); // 1 -> 2
        q.NotifyGuest();
        EventFds.Drain(call).Should().Be(0);
        Complete(ring, q, 1); // 2 -> 3: entry 3 not yet used
        q.NotifyGuest();
        EventFds.Drain(call).Should().Be(0);
        Complete(ring, q, 1); // 3 -> 4 passes 3
        q.NotifyGuest();
        EventFds.Drain(call).Should().Be(1);

        ring.UsedEvent = 5;
        Complete(ring, q, 3); // 4 -> 7 in one batch passes 5
        q.NotifyGuest();
        EventFds.Drain(call).Should().Be(1);
        q.NotifyGuest();
        EventFds.Drain(call).Should().Be(0, "no push since the last notification");

        ring.UsedEvent = 0xFFFF; // 7 -> 8 does not pass 0xFFFF
        Complete(ring, q, 1);
        q.NotifyGuest();
        EventFds.Drain(call).Should().Be(0);
    }

    [Fact]
    public void NotifyGuest_honours_no_interrupt_without_event_idx()
    {
        var (ring, q, call) = NotifySetup(eventIndex: false);
        using var _ = call;
        ring.UsedEvent = 0x7777; // ignored without EVENT_IDX

        ring.AvailFlags = VirtqueueLayout.AvailFlagNoInterrupt;
        Complete(ring, q, 1);
        q.NotifyGuest();
        EventFds.Drain(call).Should().Be(0);

        ring.AvailFlags = 0;
        q.NotifyGuest();
        EventFds.Drain(call).Should().Be(0, "the pending push was consumed by the suppressed check");
        Complete(ring, q, 2);
        q.NotifyGuest();
        EventFds.Drain(call).Should().Be(1);
        q.NotifyGuest();
        EventFds.Drain(call).Should().Be(0);
    }

    // ---- memory layouts ----

    [Fact]
    public void Buffers_crossing_two_adjacent_regions_are_handled_piecewise()
    {
        // GPA-contiguous regions whose host mappings are far apart (file offsets 0x1000 and 0x20000).
        using var ram = new GuestRam(0x30000, new RegionSpec(0x10000, 0x8000, 0x1000), new RegionSpec(0x18000, 0x8000, 0x20000));
        var ring = new SplitRing(ram, 8);
        byte[] payload = Pattern(0x20, 10);
        ram.Write(0x17FF0, payload);
        ring.Desc(0, 0x17FF0, 0x20, N, 1);
        ring.Desc(1, 0x17FF8, 0x10, W, 0);
        ring.Desc(2, 0x17FF0, 0x20, N, 3);
        ring.Desc(3, 0x1FFF8, 0x10, W, 0); // runs off the end of the second region
        ring.Offer(0);
        var q = ring.Queue();
        byte[] before = ram.Snapshot();

        var c = Pop(q);
        c.ReadableLength.Should().Be(0x20);
        c.WritableLength.Should().Be(0x10);
        var buf = new byte[0x20];
        c.ReadReadable(0, buf).Should().Be(0x20);
        buf.Should().Equal(payload);
        var partial = new byte[0x10];
        c.ReadReadable(0xC, partial).Should().Be(0x10);
        partial.Should().Equal(payload[0xC..0x1C]);

        byte[] w = Pattern(0x10, 11);
        c.WriteWritable(0, w).Should().Be(0x10);
        ram.Read(0x17FF8, 0x10).Should().Equal(w);
        q.Push(c, 0x10);
        ram.ShouldBeUnchangedExcept(before, ring.UsedWritable, ram.Range(0x17FF8, 8), ram.Range(0x18000, 8));

        ring.Offer(2);
        ShouldBreak(q, "not inside guest memory");
    }

    [Fact]
    public void Chain_totals_beyond_2_GiB_break_the_queue()
    {
        // A sparse 3 GiB memfd: the walker translates but never touches buffer bytes.
        const long size = 3L << 30;
        using var fd = Memfd.Create(size);
        var region = GuestMemoryRegion.TryMap(new MemoryRegionPayload(0, (ulong)size, GuestRam.UaDelta, 0), fd, out string error)
            ?? throw new InvalidOperationException(error);
        var table = new GuestMemoryTable([region]);
        try
        {
            unsafe
            {
                byte* p = (byte*)region.Base;
                void Desc(int i, ulong addr, uint len, ushort flags, ushort next)
                {
                    *(ulong*)(p + (i * 16)) = addr;
                    *(uint*)(p + (i * 16) + 8) = len;
                    *(ushort*)(p + (i * 16) + 12) = flags;
                    *(ushort*)(p + (i * 16) + 14) = next;
                }

                SplitVirtqueue Make() => new(0, 4, table, GuestRam.UaDelta, GuestRam.UaDelta + 0x100, GuestRam.UaDelta + 0x200, 0, false, false);
                void Offer(ushort idx, ushort head)
                {
                    *(ushort*)(p + 0x100 + 4 + (2 * ((idx - 1) % 4))) = head;
                    *(ushort*)(p + 0x100 + 2) = idx;
                }

                Desc(0, 0x1000, 0x7FFF_FFFF, 0, 0); // exactly int.MaxValue: fine
                Offer(1, 0);
                var q = Make();
                q.TryPop(out var ok).Should().BeTrue(q.BrokenReason);
                ok!.ReadableLength.Should().Be(int.MaxValue);

                Desc(1, 0x1000, 0x6000_0000, W | N, 2); // two writable halves sum past 2^31
                Desc(2, 0x1000, 0x6000_0000, W, 0);
                Offer(2, 1);
                q.TryPop(out _).Should().BeFalse();
                q.BrokenReason.Should().Contain("2 GiB");

                Desc(3, 0x1000, 0x8000_0000, 0, 0); // one descriptor of 2 GiB
                *(ushort*)(p + 0x200 + 2) = 0;
                var q2 = new SplitVirtqueue(0, 4, table, GuestRam.UaDelta, GuestRam.UaDelta + 0x100, GuestRam.UaDelta + 0x200, 1, false, false);
                Offer(2, 3);
                q2.TryPop(out _).Should().BeFalse();
                q2.BrokenReason.Should().Contain("2 GiB");
            }
        }
        finally
        {
            table.Release();
        }
    }

    [Fact]
    public void ReplaceMemory_keeps_the_old_table_when_the_ring_does_not_fit_the_new_one()
    {
        var ring = new SplitRing(_ram, 8);
        ring.Desc(0, Data, 4);
        ring.Offer(0);
        var q = ring.Queue();
        q.ReplaceMemory(GuestMemoryTable.Empty).Should().NotBeNull();
        var c = Pop(q);
        c.ReadableLength.Should().Be(4);
    }
}
