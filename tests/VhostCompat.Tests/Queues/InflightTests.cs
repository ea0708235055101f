using System.Buffers.Binary;
using System.Runtime.InteropServices;
using VhostCompat.Memory;
using VhostCompat.Queues;

namespace VhostCompat.Tests.Queues;

/// <summary>
/// Inflight I/O tracking (INFLIGHT_SHMFD) on hand-laid rings: a "crash" is a queue object abandoned
/// with chains in flight and a new queue attached to the same region, as a restarted backend process
/// would be. Also the bad-input cases of issue 6: regions of the wrong shape or with out-of-range
/// entries are refused with a reason, and nothing outside the ring's device-written parts changes.
/// </summary>
public sealed unsafe class InflightTests : IDisposable
{
    private const ulong Data = 0x14000;
    private readonly GuestRam _ram = GuestRam.Single();
    private readonly nint _region;
    private readonly int _regionBytes;

    public InflightTests()
    {
        _regionBytes = (int)InflightArea.QueueRegionSize(16, packed: true);
        _region = (nint)NativeMemory.AllocZeroed((nuint)_regionBytes);
    }

    public void Dispose()
    {
        NativeMemory.Free((void*)_region);
        _ram.Dispose();
    }

    private Span<byte> Region => new((void*)_region, _regionBytes);

    private ushort R16(int offset) => BinaryPrimitives.ReadUInt16LittleEndian(Region[offset..]);

    private void W16(int offset, ushort v) => BinaryPrimitives.WriteUInt16LittleEndian(Region[offset..], v);

    private static DescriptorChain Pop(Virtqueue q)
    {
        q.TryPop(out var chain).Should().BeTrue(q.BrokenReason ?? "a chain is available");
        return chain!;
    }

    // ---- split: layout and bookkeeping ----

    private static int SplitEntry(int head) => InflightArea.SplitHeaderSize + (16 * head);

    [Fact]
    public void Region_sizes_follow_the_spec_layout_aligned_to_64_bytes()
    {
        InflightArea.QueueRegionSize(128, packed: false).Should().Be(2112, "16 + 16·128 = 2064, aligned up to 64");
        InflightArea.QueueRegionSize(256, packed: false).Should().Be(4160);
        InflightArea.QueueRegionSize(128, packed: true).Should().Be(4160, "32 + 32·128 = 4128, aligned up to 64");
        InflightArea.QueueRegionSize(1, packed: true).Should().Be(64);
    }

    [Fact]
    public void A_fresh_split_region_is_initialised_and_tracks_pop_and_push()
    {
        var ring = new SplitRing(_ram, 8);
        ring.UsedIdx = 5;
        ring.AvailIdx = 5;
        var q = ring.Queue(nextAvail: 5);
        q.AttachInflight(_region, 16).Should().BeNull();
        R16(8).Should().Be(1, "version");
        R16(10).Should().Be(8, "desc_num = ring size");
        R16(14).Should().Be(5, "used_idx starts at the ring's used.idx");

        ring.Desc(3, Data, 64);
        ring.Offer(3);
        var c = Pop(q);
        c.IsResubmitted.Should().BeFalse();
        Region[SplitEntry(3)].Should().Be(1, "popped chains are in flight");
        BinaryPrimitives.ReadUInt64LittleEndian(Region[(SplitEntry(3) + 8)..]).Should().Be(0, "the first fetch gets counter 0");

        q.Push(c, 0);
        Region[SplitEntry(3)].Should().Be(0);
        R16(12).Should().Be(3, "the pushed chain is the last batch");
        R16(14).Should().Be(6, "used_idx follows used.idx");
        ring.UsedIdx.Should().Be(6);
    }

    [Fact]
    public void After_a_crash_split_chains_completed_out_of_order_are_resubmitted_in_fetch_order_and_new_ones_follow()
    {
        var ring = new SplitRing(_ram, 8);
        for (int i = 0; i < 8; i++)
        {
            ring.Desc(i, Data + ((ulong)i * 0x100), (uint)(0x10 + i));
        }

        ring.Offer(6, 1, 4);
        var first = ring.Queue();
        first.AttachInflight(_region, 16).Should().BeNull();
        var c6 = Pop(first);
        var c1 = Pop(first);
        Pop(first).Head.Should().Be(4);
        first.Push(c1, 0); // completed out of order; 6 and 4 are still in flight when the process dies
        c6.Head.Should().Be(6);

        // QEMU restores last_avail_idx from used.idx (1) after a crash: on its own that would re-read avail[1] = 1, a
        // completed request, and lose 6. The region puts the queue right.
        ring.Offer(2);
        var second = ring.Queue(nextAvail: ring.UsedIdx);
        second.AttachInflight(_region, 16).Should().BeNull();
        second.PendingResubmissions.Should().Be(2);
        second.Base.Should().Be(3, "used.idx 1 + 2 chains in flight: the next new chain is avail[3]");

        var r6 = Pop(second);
        r6.Head.Should().Be(6);
        r6.IsResubmitted.Should().BeTrue();
        r6.ReadableLength.Should().Be(0x16);
        var r4 = Pop(second);
        r4.Head.Should().Be(4);
        r4.IsResubmitted.Should().BeTrue();
        var n2 = Pop(second);
        n2.Head.Should().Be(2);
        n2.IsResubmitted.Should().BeFalse();
        second.TryPop(out _).Should().BeFalse();

        second.Push(r4, 0);
        second.Push(n2, 0);
        second.Push(r6, 0);
        ring.UsedIdx.Should().Be(4);
        ring.Used(1).Id.Should().Be(4);
        ring.Used(2).Id.Should().Be(2);
        ring.Used(3).Id.Should().Be(6);

        var third = ring.Queue(nextAvail: ring.UsedIdx);
        third.AttachInflight(_region, 16).Should().BeNull();
        third.PendingResubmissions.Should().Be(0, "everything completed");
        third.Base.Should().Be(4);
    }

    [Fact]
    public void A_split_crash_after_the_used_index_was_published_but_before_the_entry_was_cleared_is_repaired()
    {
        var ring = new SplitRing(_ram, 8);
        ring.Desc(2, Data, 32);
        ring.Offer(2);
        var first = ring.Queue();
        first.AttachInflight(_region, 16).Should().BeNull();
        var c = Pop(first);
        first.Push(c, 0);

        // Undo the two writes that follow publishing used.idx: the region still says "in flight", used_idx 0.
        Region[SplitEntry(2)] = 1;
        W16(14, 0);

        var second = ring.Queue(nextAvail: ring.UsedIdx);
        second.AttachInflight(_region, 16).Should().BeNull();
        second.PendingResubmissions.Should().Be(0, "head 2 is in the last batch, which reached the used ring");
        Region[SplitEntry(2)].Should().Be(0);
        R16(14).Should().Be(1);
        second.Base.Should().Be(1);
    }

    [Theory]
    [InlineData("version", "version 7 is not supported")]
    [InlineData("desc_num", "tracks 4 descriptors, the ring has 8")]
    [InlineData("last_batch_head", "last_batch_head 8 outside the ring")]
    [InlineData("flag", "flag 2 (0 or 1 expected)")]
    [InlineData("batch", "more than the ring size")]
    [InlineData("batch_next", "batch list points at entry 300")]
    public void A_hostile_split_region_is_refused_with_a_reason_and_the_ring_is_untouched(string field, string reason)
    {
        var ring = new SplitRing(_ram, 8);
        ring.Queue().AttachInflight(_region, 16).Should().BeNull();
        switch (field)
        {
            case "version": W16(8, 7); break;
            case "desc_num": W16(10, 4); break;
            case "last_batch_head": W16(12, 8); break;
            case "flag": Region[SplitEntry(5)] = 2; break;
            case "batch": ring.UsedIdx = 20; break;
            case "batch_next":
                ring.UsedIdx = 2;
                W16(12, 1);
                W16(SplitEntry(1) + 6, 300);
                break;
        }

        byte[] before = _ram.Snapshot();
        var q = ring.Queue();
        q.AttachInflight(_region, 16).Should().Contain(reason);
        _ram.ShouldBeUnchangedExcept(before);
    }

    [Fact]
    public void A_split_region_smaller_than_the_ring_is_refused()
    {
        var ring = new SplitRing(_ram, 8);
        ring.Queue().AttachInflight(_region, 4).Should().Contain("tracks 4 entries per queue, the ring has 8");
        R16(8).Should().Be(0, "nothing was initialised");
    }

    [Fact]
    public void A_resubmitted_split_chain_whose_descriptors_became_invalid_breaks_the_queue()
    {
        var ring = new SplitRing(_ram, 8);
        ring.Desc(1, Data, 32);
        ring.Offer(1);
        var first = ring.Queue();
        first.AttachInflight(_region, 16).Should().BeNull();
        Pop(first);

        ring.Desc(1, 0xDEAD_0000, 32); // the guest rewrote an in-flight descriptor
        var second = ring.Queue(nextAvail: ring.UsedIdx);
        second.AttachInflight(_region, 16).Should().BeNull();
        second.TryPop(out _).Should().BeFalse();
        second.IsBroken.Should().BeTrue();
        second.BrokenReason.Should().Contain("not inside guest memory");
    }

    // ---- packed ----

    private const int PackedHeader = InflightArea.PackedHeaderSize;

    private static int PackedEntry(int i) => PackedHeader + (32 * i);

    [Fact]
    public void After_a_crash_packed_chains_are_rebuilt_from_the_region_even_though_used_descriptors_overwrote_the_ring()
    {
        var ring = new PackedRing(_ram, 8);
        ring.Post(2, new Elem(Data, 0x20), new Elem(Data + 0x100, 0x30, Write: true)); // id 2, slots 0-1
        ring.Post(5, new Elem(Data + 0x200, 0x40));                                          // id 5, slot 2
        ring.Post(7, new Elem(Data + 0x300, 0x50), new Elem(Data + 0x400, 0x60, Write: true)); // id 7, slots 3-4
        var first = ring.Queue();
        first.AttachInflight(_region, 16).Should().BeNull();
        R16(8).Should().Be(1);
        var a = Pop(first);
        var b = Pop(first);
        var c = Pop(first);
        (a.Head, b.Head, c.Head).Should().Be(((ushort)2, (ushort)5, (ushort)7));

        // Complete the last one first: its used descriptor goes to slot 0, overwriting chain 2's first descriptor.
        first.Push(c, 0x60);
        ring.ReadDesc(0).Id.Should().Be(7);

        var second = ring.Queue(); // QEMU cannot restore a packed ring's position: it sends the stale initial base
        second.AttachInflight(_region, 16).Should().BeNull();
        second.PendingResubmissions.Should().Be(2);
        second.Base.Should().Be(5u | 0x8000u | (2u << 16) | 0x8000_0000u, "avail resumes at slot 5, used at slot 2 (after the 2-slot chain 7)");

        var r2 = Pop(second);
        r2.Head.Should().Be(2);
        r2.IsResubmitted.Should().BeTrue();
        r2.ReadableLength.Should().Be(0x20);
        r2.WritableLength.Should().Be(0x30);
        r2.DescriptorSlots.Should().Be(2);
        var r5 = Pop(second);
        r5.Head.Should().Be(5);
        r5.ReadableLength.Should().Be(0x40);
        second.TryPop(out _).Should().BeFalse();

        ring.Post(3, new Elem(Data + 0x500, 0x10));
        var n3 = Pop(second);
        n3.Head.Should().Be(3);
        n3.IsResubmitted.Should().BeFalse();
        second.Push(r5, 0);
        second.Push(n3, 0);
        second.Push(r2, 0x30);

        var third = ring.Queue();
        third.AttachInflight(_region, 16).Should().BeNull();
        third.PendingResubmissions.Should().Be(0);
        third.Base.Should().Be(6u | 0x8000u | (6u << 16) | 0x8000_0000u, "2 + 1 + 1 + 2 slots used; 6 popped");
    }

    [Fact]
    public void A_packed_push_that_reached_the_ring_before_the_crash_is_committed_and_one_that_did_not_is_rolled_back()
    {
        var ring = new PackedRing(_ram, 8);
        ring.Post(1, new Elem(Data, 0x10));
        var first = ring.Queue();
        first.AttachInflight(_region, 16).Should().BeNull();
        var c = Pop(first);
        first.Push(c, 0);

        // Published (the used descriptor is in the ring) but not committed: old_* still describe the state before.
        W16(14, 1);  // old_free_head: the free list before the push started at entry 1
        W16(18, 0);  // old_used_idx
        Region[PackedEntry(0)] = 1;
        var second = ring.Queue();
        second.AttachInflight(_region, 16).Should().BeNull();
        second.PendingResubmissions.Should().Be(0, "the used descriptor reached the ring: the push is committed");
        second.Base.Should().Be(1u | 0x8000u | (1u << 16) | 0x8000_0000u);

        // Now a push that did not reach the ring: used_idx moved in the region, the ring slot is still available.
        ring.Post(2, new Elem(Data, 0x10));
        var third = ring.Queue(second.Base);
        third.AttachInflight(_region, 16).Should().BeNull();
        var d = Pop(third);
        d.Head.Should().Be(2);
        W16(16, 2); // used_idx advanced (BeginPush) but the descriptor at slot 1 was never marked used
        var fourth = ring.Queue();
        fourth.AttachInflight(_region, 16).Should().BeNull();
        fourth.PendingResubmissions.Should().Be(1, "the push did not happen: chain 2 is still in flight");
        Pop(fourth).Head.Should().Be(2);
    }

    [Theory]
    [InlineData("loop", "free list is broken")]
    [InlineData("num", "has 200 descriptors")]
    [InlineData("shared", "already in another list")]
    [InlineData("wrap", "inflight header out of range")]
    [InlineData("used", "inflight header out of range")]
    [InlineData("desc_num", "tracks 9 descriptors")]
    [InlineData("flag", "flag 3 (0 or 1 expected)")]
    public void A_hostile_packed_region_is_refused_with_a_reason_and_the_ring_is_untouched(string field, string reason)
    {
        var ring = new PackedRing(_ram, 8);
        ring.Post(1, new Elem(Data, 0x10), new Elem(Data + 0x10, 0x10));
        ring.Post(2, new Elem(Data + 0x20, 0x10));
        var first = ring.Queue();
        first.AttachInflight(_region, 16).Should().BeNull();
        Pop(first);
        Pop(first); // entries 0,1 = chain 1; entry 2 = chain 2; free list 3 -> 4 -> ... -> 8
        switch (field)
        {
            case "loop": W16(PackedEntry(5) + 2, 3); break;
            case "num": W16(PackedEntry(0) + 6, 200); break;
            case "shared": W16(PackedEntry(0) + 6, 3); W16(PackedEntry(0) + 4, 2); break; // chain 1 swallows chain 2's entry
            case "wrap": Region[20] = 2; Region[21] = 2; break;
            case "used": W16(16, 8); W16(18, 8); break;
            case "desc_num": W16(10, 9); break;
            case "flag": Region[PackedEntry(1)] = 3; break;
        }

        byte[] before = _ram.Snapshot();
        ring.Queue().AttachInflight(_region, 16).Should().Contain(reason);
        _ram.ShouldBeUnchangedExcept(before);
    }
}
