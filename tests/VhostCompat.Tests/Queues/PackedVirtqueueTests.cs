using VhostCompat.Interop;
using VhostCompat.Queues;

namespace VhostCompat.Tests.Queues;

/// <summary>
/// Packed rings laid out by hand in a memfd (PROTOCOL.md §11.6; HOSTILE-INPUTS D20–D22, D25).
/// Memory: one region GPA 0x10000–0x20000 with guard pages; descriptor ring at 0x10000, driver
/// event area at 0x11000, device event area at 0x11100, buffers from 0x14000.
/// </summary>
public sealed class PackedVirtqueueTests : IDisposable
{
    private const ulong Data = 0x14000;
    private const ushort N = VirtqueueLayout.DescFlagNext;
    private const ushort W = VirtqueueLayout.DescFlagWrite;
    private const ushort I = VirtqueueLayout.DescFlagIndirect;
    private const ushort A = VirtqueueLayout.PackedFlagAvail;
    private const ushort U = VirtqueueLayout.PackedFlagUsed;

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

    private static uint ExpectedBase(PackedRing ring) =>
        (uint)ring.Next | (ring.Wrap ? 0x8000u : 0) | ((uint)ring.UsedNext << 16) | (ring.UsedWrap ? 0x8000_0000u : 0);

    [Fact]
    public void A_single_descriptor_is_popped_and_marked_used_with_the_device_wrap_counter()
    {
        var ring = new PackedRing(_ram, 8);
        byte[] payload = Pattern(16, 1);
        _ram.Write(Data, payload);
        ring.Post(3, new Elem(Data, 16));
        var q = ring.Queue();
        q.Base.Should().Be(0x8000_8000u);
        byte[] before = _ram.Snapshot();

        var c = Pop(q);
        c.Head.Should().Be(3, "the buffer id identifies the chain");
        c.ReadableLength.Should().Be(16);
        c.DescriptorSlots.Should().Be(1);
        var buf = new byte[16];
        c.ReadReadable(0, buf).Should().Be(16);
        buf.Should().Equal(payload);
        q.TryPop(out _).Should().BeFalse();
        q.Base.Should().Be(0x8000_8001u);

        q.Push(c, 0);
        var d = ring.ReadDesc(0);
        d.Id.Should().Be(3);
        d.Len.Should().Be(0);
        d.Flags.Should().Be(A | U, "used = avail = device wrap counter 1; no WRITE when nothing was written");
        d.Addr.Should().Be(Data, "the device leaves the address alone");
        q.Base.Should().Be(0x8001_8001u);
        _ram.ShouldBeUnchangedExcept(before, _ram.Range(ring.RingGpa + 8, 8));
    }

    [Fact]
    public void A_chain_occupies_consecutive_slots_and_one_used_descriptor_skips_them_all()
    {
        var ring = new PackedRing(_ram, 8);
        byte[] r = Pattern(10, 2);
        _ram.Write(Data, r);
        ring.Post(5, new Elem(Data, 10), new Elem(Data + 0x100, 4, true), new Elem(Data + 0x200, 8, true));
        ring.Post(6, new Elem(Data + 0x300, 2, true));
        var q = ring.Queue();
        byte[] before = _ram.Snapshot();

        var c = Pop(q);
        c.Head.Should().Be(5);
        c.DescriptorSlots.Should().Be(3);
        c.ReadableLength.Should().Be(10);
        c.WritableLength.Should().Be(12);
        byte[] w = Pattern(12, 3);
        c.WriteWritable(2, w.AsSpan(0, 10)).Should().Be(10);
        _ram.Read(Data + 0x102, 2).Should().Equal(w[..2]);
        _ram.Read(Data + 0x200, 8).Should().Equal(w[2..10]);
        var c2 = Pop(q);
        c2.Head.Should().Be(6);
        q.Base.Should().Be(0x8000_8004u);

        q.Push(c2, 2); // completion order: 6 first, written at used slot 0
        q.Push(c, 12);
        ring.TryTakeUsed(out ushort id, out uint len, out ushort flags).Should().BeTrue();
        (id, len, flags).Should().Be(((ushort)6, 2u, (ushort)(A | U | W)));
        ring.TryTakeUsed(out id, out len, out flags).Should().BeTrue();
        (id, len, flags).Should().Be(((ushort)5, 12u, (ushort)(A | U | W)));
        ring.UsedNext.Should().Be(4);
        q.Base.Should().Be(0x8004_8004u);
        _ram.ShouldBeUnchangedExcept(before, ring.RingRange, _ram.Range(Data + 0x102, 2), _ram.Range(Data + 0x200, 8));
    }

    [Theory]
    [InlineData((ushort)0)]
    [InlineData((ushort)(A | U))] // used in this lap
    [InlineData(U)] // available in the next lap
    [InlineData((ushort)(A | U | N | W))]
    public void Descriptors_not_marked_available_for_the_current_wrap_are_not_consumed(ushort flags)
    {
        var ring = new PackedRing(_ram, 8);
        ring.WriteDesc(0, Data, 16, 0, flags);
        var q = ring.Queue();
        byte[] before = _ram.Snapshot();
        q.TryPop(out _).Should().BeFalse();
        q.IsBroken.Should().BeFalse();
        q.PrepareToSleep().Should().BeFalse();
        _ram.ShouldBeUnchangedExcept(before, _ram.Range(ring.DeviceGpa + 2, 2));
    }

    [Theory]
    [InlineData(5)] // not a power of two
    [InlineData(8)]
    public void Three_laps_of_requests_wrap_both_counters_and_chains_cross_the_end_of_the_ring(int size)
    {
        var ring = new PackedRing(_ram, size);
        var q = ring.Queue();
        byte[] before = _ram.Snapshot();
        var written = new List<(long, long)> { ring.RingRange };
        int requests = 0;
        int totalSlots = 0;
        while (requests < 3 * size)
        {
            int slots = 1 + (requests % 3);
            ushort id = (ushort)(requests % size);
            var elems = new Elem[slots];
            for (int k = 0; k < slots - 1; k++)
            {
                elems[k] = new Elem(Data + (ulong)(k * 0x40), 0x20);
            }

            ulong wbuf = Data + 0x1000 + (ulong)(requests * 0x40);
            elems[^1] = new Elem(wbuf, 0x20, true);
            ring.Post(id, elems);
            totalSlots += slots;
            (q.Base >> 16).Should().Be(ExpectedBase(ring) >> 16, "the used half has not moved");

            var c = Pop(q);
            c.Head.Should().Be(id);
            c.DescriptorSlots.Should().Be(slots);
            c.ReadableLength.Should().Be(0x20 * (slots - 1));
            c.WritableLength.Should().Be(0x20);
            (q.Base & 0xFFFF).Should().Be(ExpectedBase(ring) & 0xFFFF, "the avail position and wrap match the driver's");
            int len = requests % 4 == 3 ? 0 : requests + 1;
            c.WriteWritable(0, Pattern(len, requests)).Should().Be(len);
            written.Add(_ram.Range(wbuf, len));
            q.Push(c, len);

            ring.TryTakeUsed(out ushort uid, out uint ulen, out ushort uflags).Should().BeTrue($"request {requests} was pushed");
            uid.Should().Be(id);
            ulen.Should().Be((uint)len);
            ((uflags & W) != 0).Should().Be(len > 0);
            q.Base.Should().Be(ExpectedBase(ring));
            requests++;
        }

        ring.Wrap.Should().Be((totalSlots / size) % 2 == 0, "the avail counter flips once per lap");
        (totalSlots / size).Should().BeGreaterThanOrEqualTo(3);
        _ram.ShouldBeUnchangedExcept(before, [.. written]);
    }

    [Fact]
    public void Several_buffers_in_flight_are_completed_out_of_order_across_laps()
    {
        var ring = new PackedRing(_ram, 6);
        var q = ring.Queue();
        for (int round = 0; round < 9; round++)
        {
            ushort a = (ushort)((2 * round) % 6), b = (ushort)(((2 * round) + 1) % 6);
            ring.Post(a, new Elem(Data, 4), new Elem(Data + 0x10, 4, true));
            ring.Post(b, new Elem(Data + 0x20, 4, true));
            var ca = Pop(q);
            var cb = Pop(q);
            q.Push(cb, 1);
            q.Push(ca, 4);
            ring.TryTakeUsed(out ushort id1, out uint l1, out _).Should().BeTrue();
            ring.TryTakeUsed(out ushort id2, out uint l2, out _).Should().BeTrue();
            (id1, l1, id2, l2).Should().Be((b, 1u, a, 4u));
            q.Base.Should().Be(ExpectedBase(ring));
        }
    }

    [Fact]
    public void A_chain_of_exactly_size_descriptors_is_legal_and_flips_the_wrap_counter()
    {
        var ring = new PackedRing(_ram, 4);
        ring.Post(2, [.. Enumerable.Range(0, 4).Select(k => new Elem(Data + (ulong)(k * 0x10), 16))]);
        var q = ring.Queue();
        var c = Pop(q);
        c.DescriptorSlots.Should().Be(4);
        c.ReadableLength.Should().Be(64);
        (q.Base & 0xFFFF).Should().Be(0u, "avail position 0 with wrap counter 0");
        q.Push(c, 0);
        q.Base.Should().Be(0u);
        ring.ReadDesc(0).Flags.Should().Be(A | U);
    }

    [Fact]
    public void A_chain_longer_than_the_ring_breaks_the_queue()
    {
        var ring = new PackedRing(_ram, 4);
        for (int s = 0; s < 4; s++)
        {
            ring.WriteDesc(s, Data, 16, 1, (ushort)(A | N));
        }

        var q = ring.Queue();
        byte[] before = _ram.Snapshot();
        ShouldBreak(q, "longer than the ring");
        _ram.ShouldBeUnchangedExcept(before);
    }

    // ---- base (GET/SET_VRING_BASE) ----

    [Fact]
    public void A_qemu_style_base_resumes_both_positions_and_wrap_counters()
    {
        var ring = new PackedRing(_ram, 8) { Next = 2, Wrap = false, UsedNext = 2, UsedWrap = false };
        ring.Post(1, new Elem(Data, 4, true));
        var q = ring.Queue(@base: 0x0002_0002);
        q.Base.Should().Be(0x0002_0002u);
        var c = Pop(q);
        q.Push(c, 4);
        ring.ReadDesc(2).Flags.Should().Be(W, "AVAIL = USED = device wrap counter 0");
        ring.TryTakeUsed(out ushort id, out _, out _).Should().BeTrue();
        id.Should().Be(1);
        q.Base.Should().Be(0x0003_0003u);
    }

    [Fact]
    public void Avail_and_used_halves_of_the_base_are_independent()
    {
        var ring = new PackedRing(_ram, 8) { Next = 5, Wrap = true, UsedNext = 3, UsedWrap = false };
        ring.Post(0, new Elem(Data, 4, true));
        var q = ring.Queue(@base: 0x0003_8005);
        q.Base.Should().Be(0x0003_8005u);
        var c = Pop(q);
        q.Push(c, 4);
        ring.ReadDesc(3).Should().Be((0UL, 4u, (ushort)0, W), "used slot 3 (zeroed memory) now holds the used descriptor");
        q.Base.Should().Be(0x0004_8006u);
    }

    [Theory]
    [InlineData(0x0000_8003u, 0x8003_8003u)]
    [InlineData(0x0000_0004u, 0x0004_0004u)]
    [InlineData(0x0000_0000u, 0x0000_0000u)]
    public void A_dpdk_style_base_with_zero_upper_half_sets_used_equal_to_avail(uint @base, uint reported)
    {
        var ring = new PackedRing(_ram, 8);
        var q = ring.Queue(@base: @base);
        q.Base.Should().Be(reported);
    }

    [Theory]
    [InlineData(0x8000_8008u)] // avail index = size
    [InlineData(0x8009_8000u)] // used index beyond the ring
    [InlineData(0x0000_7FFFu)]
    public void A_base_outside_the_ring_is_rejected(uint @base)
    {
        var ring = new PackedRing(_ram, 8);
        FluentActions.Invoking(() => ring.Queue(@base: @base)).Should().Throw<ArgumentException>();
    }

    [Fact]
    public void Packed_ring_structures_outside_memory_are_rejected()
    {
        FluentActions.Invoking(() => new PackedVirtqueue(0, 8, _ram.Table, GuestRam.Ua(0x1FF90), GuestRam.Ua(0x11000), GuestRam.Ua(0x11100), 0x8000_8000, false, false))
            .Should().Throw<ArgumentException>("8 descriptors from 0x1FF90 run past the region");
        FluentActions.Invoking(() => new PackedVirtqueue(0, 8, _ram.Table, GuestRam.Ua(0x10000), GuestRam.Ua(0x1FFFE), GuestRam.Ua(0x11100), 0x8000_8000, false, false))
            .Should().Throw<ArgumentException>();
        FluentActions.Invoking(() => new PackedVirtqueue(0, 8, _ram.Table, GuestRam.Ua(0x10000), GuestRam.Ua(0x11000), 0x11100, 0x8000_8000, false, false))
            .Should().Throw<ArgumentException>();
    }

    // ---- indirect ----

    [Fact]
    public void A_packed_indirect_table_is_walked_sequentially_ignoring_ids_and_next()
    {
        var ring = new PackedRing(_ram, 4);
        ulong table = Data + 0x1000;
        byte[] r = Pattern(8, 4);
        _ram.Write(Data, r);
        PackedRing.WriteIndirect(_ram, table, 0, new Elem(Data, 8), id: 0xFFFF);
        _ram.W16(table + 14, N); // NEXT inside an indirect table is reserved and ignored
        PackedRing.WriteIndirect(_ram, table, 1, new Elem(Data + 0x100, 16, true), id: 77);
        PackedRing.WriteIndirect(_ram, table, 2, new Elem(Data + 0x200, 4, true));
        ring.PostIndirect(2, table, 48, extraFlags: W); // WRITE on the referring descriptor is ignored
        ring.Post(3, new Elem(Data + 0x300, 4, true));
        var q = ring.Queue(indirect: true);
        byte[] before = _ram.Snapshot();

        var c = Pop(q);
        c.Head.Should().Be(2);
        c.DescriptorSlots.Should().Be(1);
        c.ReadableLength.Should().Be(8);
        c.WritableLength.Should().Be(20);
        var buf = new byte[8];
        c.ReadReadable(0, buf);
        buf.Should().Equal(r);
        c.WriteWritable(14, Pattern(6, 5)).Should().Be(6);
        _ram.Read(Data + 0x10E, 2).Should().Equal(Pattern(6, 5)[..2]);
        _ram.Read(Data + 0x200, 4).Should().Equal(Pattern(6, 5)[2..]);
        Pop(q).Head.Should().Be(3, "the next buffer starts right after the single indirect slot");
        q.Push(c, 20);
        ring.TryTakeUsed(out ushort id, out uint len, out _).Should().BeTrue();
        (id, len).Should().Be(((ushort)2, 20u));
        _ram.ShouldBeUnchangedExcept(before, ring.RingRange, _ram.Range(Data + 0x10E, 2), _ram.Range(Data + 0x200, 4));
    }

    [Theory]
    [InlineData(0u, "indirect table length")]
    [InlineData(15u, "indirect table length")]
    [InlineData(24u, "indirect table length")]
    public void A_bad_packed_indirect_table_length_breaks_the_queue(uint len, string reason)
    {
        var ring = new PackedRing(_ram, 4);
        PackedRing.WriteIndirect(_ram, Data + 0x1000, 0, new Elem(Data, 4));
        PackedRing.WriteIndirect(_ram, Data + 0x1000, 1, new Elem(Data, 4));
        ring.PostIndirect(0, Data + 0x1000, len);
        ShouldBreak(ring.Queue(indirect: true), reason);
    }

    [Fact]
    public void Packed_indirect_misuse_breaks_the_queue()
    {
        void Case(Action<PackedRing> post, bool feature, string reason, Action<GuestRam>? prepare = null)
        {
            using var ram = GuestRam.Single();
            var ring = new PackedRing(ram, 4);
            PackedRing.WriteIndirect(ram, Data + 0x1000, 0, new Elem(Data, 4));
            prepare?.Invoke(ram);
            post(ring);
            byte[] before = ram.Snapshot();
            var q = ring.Queue(indirect: feature);
            q.TryPop(out _).Should().BeFalse(reason);
            q.BrokenReason.Should().Contain(reason);
            ram.ShouldBeUnchangedExcept(before);
        }

        Case(r => r.PostIndirect(0, Data + 0x1000, 16), feature: false, "invalid indirect descriptor");
        Case(r => r.PostIndirect(0, Data + 0x1000, 16, extraFlags: N), feature: true, "invalid indirect descriptor");
        Case(r => r.PostIndirect(0, 0x1_0000_0000, 16), feature: true, "is not inside guest memory");
        Case(r => r.PostIndirect(0, 0x1FFF0, 32), feature: true, "is not inside guest memory");
        Case(
            r => r.PostIndirect(0, Data + 0x2000, 32),
            feature: true,
            "indirect buffer 0x100000000+4 is not inside",
            ram =>
            {
                PackedRing.WriteIndirect(ram, Data + 0x2000, 0, new Elem(Data, 4));
                PackedRing.WriteIndirect(ram, Data + 0x2000, 1, new Elem(0x1_0000_0000, 4, true));
            });
    }

    [Fact]
    public void Packed_indirect_after_a_direct_descriptor_in_the_same_chain_breaks_the_queue()
    {
        var ring = new PackedRing(_ram, 4);
        PackedRing.WriteIndirect(_ram, Data + 0x1000, 0, new Elem(Data, 4));
        ring.WriteDesc(1, Data + 0x1000, 16, 0, (ushort)(A | I));
        ring.WriteDesc(0, Data, 4, 0, (ushort)(A | N));
        ShouldBreak(ring.Queue(indirect: true), "invalid indirect descriptor at slot 1");
    }

    [Fact]
    public void A_nested_packed_indirect_descriptor_breaks_the_queue()
    {
        var ring = new PackedRing(_ram, 4);
        PackedRing.WriteIndirect(_ram, Data + 0x1000, 0, new Elem(Data, 4));
        _ram.W16(Data + 0x1000 + 14, I);
        ring.PostIndirect(0, Data + 0x1000, 16);
        ShouldBreak(ring.Queue(indirect: true), "nested");
    }

    [Fact]
    public void A_readable_entry_after_a_writable_one_in_a_packed_indirect_table_breaks_the_queue()
    {
        var ring = new PackedRing(_ram, 4);
        PackedRing.WriteIndirect(_ram, Data + 0x1000, 0, new Elem(Data, 4, true));
        PackedRing.WriteIndirect(_ram, Data + 0x1000, 1, new Elem(Data, 4));
        ring.PostIndirect(0, Data + 0x1000, 32);
        ShouldBreak(ring.Queue(indirect: true), "device-readable descriptor after a device-writable");
    }

    /// <summary>
    /// BUG (virtio 1.1 "If not limited, the maximum number of descriptors in a list is the virt queue size";
    /// HOSTILE-INPUTS D21): a packed indirect table of size+1 entries must be a chain error; WalkIndirect
    /// accepts up to 32768 entries.
    /// </summary>
    [Fact]
    public void A_packed_indirect_table_with_more_entries_than_the_ring_is_a_chain_error()
    {
        var ring = new PackedRing(_ram, 4);
        for (int i = 0; i < 5; i++)
        {
            PackedRing.WriteIndirect(_ram, Data + 0x1000, i, new Elem(Data + (ulong)(i * 0x10), 16));
        }

        ring.PostIndirect(0, Data + 0x1000, 5 * 16);
        ShouldBreak(ring.Queue(indirect: true), "indirect");
    }

    // ---- ids and malformed chains ----

    [Theory]
    [InlineData(4, 4)]
    [InlineData(0, 0xFFFF)] // last id out of range
    [InlineData(0, 4)]
    public void A_buffer_id_outside_the_ring_breaks_the_queue(int firstId, int lastId)
    {
        var ring = new PackedRing(_ram, 4);
        ring.PostWithIds([(ushort)firstId, (ushort)lastId], [new Elem(Data, 4), new Elem(Data + 0x10, 4, true)], 0);
        byte[] before = _ram.Snapshot();
        ShouldBreak(ring.Queue(), "buffer id");
        _ram.ShouldBeUnchangedExcept(before);
    }

    [Fact]
    public void A_buffer_id_reused_while_in_flight_breaks_the_queue_and_may_be_reused_after_push()
    {
        var ring = new PackedRing(_ram, 4);
        ring.Post(1, new Elem(Data, 4, true));
        ring.Post(1, new Elem(Data + 0x10, 4, true));
        var q = ring.Queue();
        var c = Pop(q);
        q.Push(c, 4); // completing it first makes the second use legal
        var again = Pop(q);
        again.Should().BeSameAs(c);
        again.Head.Should().Be(1);

        ring.Post(1, new Elem(Data + 0x20, 4, true));
        ShouldBreak(q, "reused while in flight");
    }

    [Fact]
    public void When_first_and_last_ids_differ_the_last_id_identifies_the_buffer()
    {
        var ring = new PackedRing(_ram, 4);
        ring.PostWithIds([2, 3, 1], [new Elem(Data, 4), new Elem(Data + 0x10, 8), new Elem(Data + 0x20, 16, true)], 0);
        var q = ring.Queue();
        var c = Pop(q);
        c.Head.Should().Be(1);
        c.ReadableLength.Should().Be(12);
        c.WritableLength.Should().Be(16);
        c.DescriptorSlots.Should().Be(3);
        q.Push(c, 16);
        ring.ReadDesc(0).Id.Should().Be(1);
        ring.ReadDesc(0).Len.Should().Be(16);
    }

    /// <summary>
    /// BUG (virtio 1.1 §2.7.6 "Buffer ID is included in the last descriptor in the list"): the ids of the other
    /// descriptors of a chain carry no meaning, but PackedVirtqueue.PopCore breaks the queue when the first
    /// descriptor's id is ≥ size or belongs to a buffer in flight.
    /// </summary>
    [Theory]
    [InlineData(0xFFFF)] // junk id in a non-last descriptor
    [InlineData(4)]
    [InlineData(0)] // the id of a buffer in flight
    public void Only_the_last_descriptor_of_a_chain_carries_the_buffer_id(int firstId)
    {
        var ring = new PackedRing(_ram, 4);
        ring.Post(0, new Elem(Data + 0x40, 4, true));
        ring.PostWithIds([(ushort)firstId, 2], [new Elem(Data, 4), new Elem(Data + 0x20, 8, true)], 0);
        var q = ring.Queue();
        Pop(q).Head.Should().Be(0);
        var c = Pop(q);
        c.Head.Should().Be(2);
        c.ReadableLength.Should().Be(4);
        c.WritableLength.Should().Be(8);
        c.DescriptorSlots.Should().Be(2);
    }

    [Fact]
    public void A_readable_descriptor_after_a_writable_one_breaks_the_packed_queue()
    {
        var ring = new PackedRing(_ram, 4);
        ring.Post(0, new Elem(Data, 4, true), new Elem(Data + 0x10, 4));
        ShouldBreak(ring.Queue(), "device-readable descriptor after a device-writable");
    }

    [Theory]
    [InlineData(0x1_0000_0000UL, 16u)]
    [InlineData(0xFFFF_FFFF_FFFF_F000UL, 0x2000u)]
    [InlineData(0x1FFF0UL, 0xFFFF_FFFFu)]
    public void A_packed_buffer_outside_memory_breaks_the_queue(ulong addr, uint len)
    {
        var ring = new PackedRing(_ram, 4);
        ring.Post(0, new Elem(Data, 4), new Elem(addr, len, true));
        byte[] before = _ram.Snapshot();
        ShouldBreak(ring.Queue(), "not inside guest memory");
        _ram.ShouldBeUnchangedExcept(before);
    }

    [Fact]
    public void A_broken_packed_queue_never_writes_a_used_descriptor()
    {
        var ring = new PackedRing(_ram, 4);
        ring.Post(0, new Elem(Data, 4, true));
        ring.Post(9, new Elem(Data, 4, true));
        var q = ring.Queue();
        using var err = FileDescriptor.CreateEventFd();
        using var call = FileDescriptor.CreateEventFd();
        q.SetErr(err);
        q.SetCall(call);
        var c = Pop(q);
        ShouldBreak(q, "buffer id 9");
        EventFds.Drain(err).Should().Be(1);
        byte[] before = _ram.Snapshot();
        q.Push(c, 4);
        q.NotifyGuest();
        q.PrepareToSleep().Should().BeFalse();
        _ram.ShouldBeUnchangedExcept(before);
        EventFds.Drain(call).Should().Be(0);
    }

    // ---- event suppression ----

    private (PackedRing Ring, PackedVirtqueue Queue, FileDescriptor Call) NotifySetup(int size, bool eventIndex)
    {
        var ring = new PackedRing(_ram, size);
        var q = ring.Queue(eventIndex: eventIndex);
        var call = FileDescriptor.CreateEventFd();
        q.SetCall(call);
        return (ring, q, call);
    }

    private static void Complete(PackedRing ring, Virtqueue q, int count)
    {
        for (int k = 0; k < count; k++)
        {
            ring.Post((ushort)(ring.Next % ring.Size), new Elem(Data, 4, true));
            q.Push(Pop(q), 4);
            ring.TryTakeUsed(out _, out _, out _).Should().BeTrue();
        }
    }

    [Theory]
    [InlineData(VirtqueueLayout.PackedEventEnable, false, 1)]
    [InlineData(VirtqueueLayout.PackedEventDisable, false, 0)]
    [InlineData(VirtqueueLayout.PackedEventDisable, true, 0)]
    [InlineData(VirtqueueLayout.PackedEventDesc, false, 1)] // DESC without EVENT_IDX: treated as enable
    [InlineData((ushort)3, false, 1)] // reserved value: treated as notify (D22)
    [InlineData((ushort)3, true, 1)]
    [InlineData((ushort)0xFFFF, true, 1)]
    public void Driver_event_flags_decide_whether_the_guest_is_called(ushort flags, bool eventIndex, long calls)
    {
        var (ring, q, call) = NotifySetup(8, eventIndex);
        using var _ = call;
        ring.DriverEvent(0x8000 | 5, flags); // an event offset not yet reached
        q.NotifyGuest();
        EventFds.Drain(call).Should().Be(0, "nothing was pushed");
        Complete(ring, q, 1);
        q.NotifyGuest();
        EventFds.Drain(call).Should().Be(calls);
        q.NotifyGuest();
        EventFds.Drain(call).Should().Be(0);

        q.SetCall(null);
        Complete(ring, q, 1);
        q.NotifyGuest(); // no call fd (yet): nothing to signal, no exception
        EventFds.Drain(call).Should().Be(0);
    }

    [Fact]
    public void Desc_event_offsets_and_wrap_bits_are_honoured_with_event_idx()
    {
        var (ring, q, call) = NotifySetup(8, eventIndex: true);
        using var _ = call;
        ring.DriverEvent(0x8000 | 2, VirtqueueLayout.PackedEventDesc);
        Complete(ring, q, 2); // used slots 0, 1: slot 2 not yet used
        q.NotifyGuest();
        EventFds.Drain(call).Should().Be(0);
        Complete(ring, q, 1); // slot 2 used
        q.NotifyGuest();
        EventFds.Drain(call).Should().Be(1);

        ring.DriverEvent(1, VirtqueueLayout.PackedEventDesc); // slot 1 of the next lap (wrap 0)
        Complete(ring, q, 4); // slots 3..6
        q.NotifyGuest();
        EventFds.Drain(call).Should().Be(0);
        Complete(ring, q, 3); // slots 7, 0', 1' -> crosses the wrap and uses slot 1 of lap 0
        q.NotifyGuest();
        EventFds.Drain(call).Should().Be(1);

        ring.DriverEvent(7, VirtqueueLayout.PackedEventDesc); // slot 7 of this lap (wrap 0)
        Complete(ring, q, 2); // slots 2', 3'
        q.NotifyGuest();
        EventFds.Drain(call).Should().Be(0);
        Complete(ring, q, 5); // slots 4'..7', 0'' (wrap 1 again)
        q.NotifyGuest();
        EventFds.Drain(call).Should().Be(1);

        ring.DriverEvent(0x8000 | 7, VirtqueueLayout.PackedEventDesc); // slot 7 of the current lap (wrap 1)
        Complete(ring, q, 3); // slots 1''..3''
        q.NotifyGuest();
        EventFds.Drain(call).Should().Be(0);
        Complete(ring, q, 4); // slots 4''..7''
        q.NotifyGuest();
        EventFds.Drain(call).Should().Be(1);

        ring.DriverEvent(0x8000 | 3, VirtqueueLayout.PackedEventDesc); // a slot of a lap already passed
        Complete(ring, q, 2);
        q.NotifyGuest();
        EventFds.Drain(call).Should().Be(0);
    }

    /// <summary>
    /// BUG (HOSTILE-INPUTS D22: "an off_wrap index ≥ size → treated as notify"): an event offset beyond the ring
    /// can never be reached, so the driver would never be called; PackedVirtqueue.ShouldNotify suppresses it.
    /// </summary>
    [Fact]
    public void An_event_offset_beyond_the_ring_is_treated_as_notify()
    {
        var (ring, q, call) = NotifySetup(8, eventIndex: true);
        using var _ = call;
        ring.DriverEvent(0x8000 | 100, VirtqueueLayout.PackedEventDesc);
        Complete(ring, q, 1);
        q.NotifyGuest();
        EventFds.Drain(call).Should().Be(1);
    }

    [Fact]
    public void PrepareToSleep_enables_driver_kicks_and_rechecks_the_ring()
    {
        var ring = new PackedRing(_ram, 4);
        _ram.W16(ring.DeviceGpa, 0x1234);
        _ram.W16(ring.DeviceGpa + 2, VirtqueueLayout.PackedEventDisable);
        var q = ring.Queue();
        byte[] before = _ram.Snapshot();
        q.PrepareToSleep().Should().BeFalse();
        ring.DeviceFlags.Should().Be(VirtqueueLayout.PackedEventEnable);
        _ram.ShouldBeUnchangedExcept(before, _ram.Range(ring.DeviceGpa + 2, 2));
        ring.Post(0, new Elem(Data, 4));
        q.PrepareToSleep().Should().BeTrue();
    }
}
