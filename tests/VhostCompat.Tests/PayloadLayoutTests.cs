using System.Buffers.Binary;
using VhostCompat.Protocol;

namespace VhostCompat.Tests;

/// <summary>
/// Byte-exact wire layouts (PROTOCOL.md §1.2 and §2). Every expected buffer is built here by hand at
/// the spec's offsets; the code under test only encodes/decodes. Field values use distinct bytes so a
/// swapped or shifted field cannot go unnoticed.
/// </summary>
public class PayloadLayoutTests
{
    private static byte[] Bytes(int length, Action<Span<byte>> fill)
    {
        var b = new byte[length];
        fill(b);
        return b;
    }

    // ---- message header (12 bytes, LE: request @0, flags @4, size @8) ----

    [Fact]
    public void MessageHeader_reads_request_flags_size_little_endian_at_0_4_8()
    {
        byte[] wire = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C];

        MessageHeader h = MessageHeader.Read(wire);

        h.Request.Should().Be(0x04030201u);
        h.Flags.Should().Be(0x08070605u);
        h.Size.Should().Be(0x0C0B0A09u);
    }

    [Fact]
    public void MessageHeader_writes_exactly_12_little_endian_bytes()
    {
        var buffer = new byte[16];
        buffer.AsSpan().Fill(0xEE);

        new MessageHeader(0x04030201, 0x08070605, 0x0C0B0A09).Write(buffer);

        buffer.Should().Equal(0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0xEE, 0xEE, 0xEE, 0xEE);
        MessageHeader.Length.Should().Be(12);
    }

    [Fact]
    public void MessageHeader_flag_constants_match_the_spec()
    {
        MessageHeader.VersionMask.Should().Be(0x3u);
        MessageHeader.Version.Should().Be(0x1u);
        MessageHeader.ReplyFlag.Should().Be(0x4u);
        MessageHeader.NeedReplyFlag.Should().Be(0x8u);
        MessageHeader.ReservedMask.Should().Be(0xFFFF_FFF0u);
        MessageHeader.ReplyFlags.Should().Be(0x5u, "QEMU and DPDK accept exactly 0x5 in a reply");
    }

    [Fact]
    public void MessageHeader_reply_and_need_reply_bits_are_decoded_from_flags()
    {
        new MessageHeader(1, 0x9, 0).NeedReply.Should().BeTrue();
        new MessageHeader(1, 0x9, 0).IsReply.Should().BeFalse();
        new MessageHeader(1, 0x5, 0).IsReply.Should().BeTrue();
        new MessageHeader(1, 0x5, 0).NeedReply.Should().BeFalse();
    }

    [Fact]
    public void MessageDecoder_Encode_writes_header_then_payload_without_padding()
    {
        byte[] encoded = MessageFraming.Encode(8, 0x9, [0xAA, 0xBB, 0xCC]);

        encoded.Should().Equal(
            0x08, 0x00, 0x00, 0x00,
            0x09, 0x00, 0x00, 0x00,
            0x03, 0x00, 0x00, 0x00,
            0xAA, 0xBB, 0xCC);
    }

    // ---- u64 ----

    [Fact]
    public void U64Payload_is_8_little_endian_bytes()
    {
        byte[] wire = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x88];

        U64Payload.Encode(0x8807060504030201).Should().Equal(wire);
        U64Payload.Read(wire).Should().Be(0x8807060504030201);
        U64Payload.Size.Should().Be(8);
    }

    // ---- vring state (8): u32 index @0, u32 num @4 ----

    [Fact]
    public void VringStatePayload_is_index_at_0_and_num_at_4()
    {
        byte[] wire = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x88];

        new VringStatePayload(0x04030201, 0x88070605).Encode().Should().Equal(wire);
        VringStatePayload.Read(wire).Should().Be(new VringStatePayload(0x04030201, 0x88070605));
        VringStatePayload.Size.Should().Be(8);
    }

    // ---- vring address (40): index @0, flags @4, desc @8, used @16, avail @24, log @32 ----

    private static byte[] VringAddressWire() => Bytes(40, b =>
    {
        BinaryPrimitives.WriteUInt32LittleEndian(b[0..], 0x00000007);            // index
        BinaryPrimitives.WriteUInt32LittleEndian(b[4..], 0x00000001);            // flags (F_LOG)
        BinaryPrimitives.WriteUInt64LittleEndian(b[8..], 0x1111_2222_3333_4440); // desc
        BinaryPrimitives.WriteUInt64LittleEndian(b[16..], 0x5555_6666_7777_8880); // used
        BinaryPrimitives.WriteUInt64LittleEndian(b[24..], 0x9999_AAAA_BBBB_CCC0); // avail
        BinaryPrimitives.WriteUInt64LittleEndian(b[32..], 0xDDDD_EEEE_FFFF_0000); // log_guest_addr
    });

    [Fact]
    public void VringAddressPayload_reads_desc_used_avail_in_that_wire_order()
    {
        VringAddressPayload a = VringAddressPayload.Read(VringAddressWire());

        a.Index.Should().Be(7u);
        a.Flags.Should().Be(VringAddressPayload.FlagLog);
        a.Descriptor.Should().Be(0x1111_2222_3333_4440);
        a.Used.Should().Be(0x5555_6666_7777_8880, "used is at offset 16, before avail (struct vhost_vring_addr)");
        a.Available.Should().Be(0x9999_AAAA_BBBB_CCC0, "avail is at offset 24");
        a.LogGuestAddress.Should().Be(0xDDDD_EEEE_FFFF_0000);
    }

    [Fact]
    public void VringAddressPayload_encodes_40_bytes_with_log_address_at_32()
    {
        var a = new VringAddressPayload(7, 1, 0x1111_2222_3333_4440, 0x5555_6666_7777_8880, 0x9999_AAAA_BBBB_CCC0, 0xDDDD_EEEE_FFFF_0000);

        a.Encode().Should().Equal(VringAddressWire());
        VringAddressPayload.Size.Should().Be(40);
        VringAddressPayload.FlagLog.Should().Be(1u);
    }

    // ---- memory region (32): gpa @0, size @8, userspace_addr @16, mmap_offset @24 ----

    private static byte[] RegionWire(ulong gpa, ulong size, ulong ua, ulong off) => Bytes(32, b =>
    {
        BinaryPrimitives.WriteUInt64LittleEndian(b[0..], gpa);
        BinaryPrimitives.WriteUInt64LittleEndian(b[8..], size);
        BinaryPrimitives.WriteUInt64LittleEndian(b[16..], ua);
        BinaryPrimitives.WriteUInt64LittleEndian(b[24..], off);
    });

    [Fact]
    public void MemoryRegionPayload_is_gpa_size_userspace_addr_mmap_offset()
    {
        byte[] wire = RegionWire(0x0102030405060708, 0x1112131415161718, 0x2122232425262728, 0x3132333435363738);
        var region = new MemoryRegionPayload(0x0102030405060708, 0x1112131415161718, 0x2122232425262728, 0x3132333435363738);

        MemoryRegionPayload.Read(wire).Should().Be(region);
        var written = new byte[32];
        region.Write(written);
        written.Should().Equal(wire);
        MemoryRegionPayload.Size.Should().Be(32);
    }

    // ---- memory table (8 + 32n): u32 nregions @0, u32 padding @4, regions @8 ----

    [Fact]
    public void MemoryTablePayload_is_count_padding_then_packed_regions()
    {
        var r0 = new MemoryRegionPayload(0x0, 0x8000_0000, 0x7F00_0000_0000, 0);
        var r1 = new MemoryRegionPayload(0x1_0000_0000, 0x4000_0000, 0x7F80_0000_0000, 0x1000);
        byte[] expected = new byte[8 + (2 * 32)];
        BinaryPrimitives.WriteUInt32LittleEndian(expected, 2);
        RegionWire(0x0, 0x8000_0000, 0x7F00_0000_0000, 0).CopyTo(expected, 8);
        RegionWire(0x1_0000_0000, 0x4000_0000, 0x7F80_0000_0000, 0x1000).CopyTo(expected, 40);

        byte[] encoded = MemoryTablePayload.Encode([r0, r1]);

        encoded.Should().Equal(expected);
        MemoryTablePayload.ReadCount(expected).Should().Be(2u);
        MemoryTablePayload.ReadRegion(expected, 0).Should().Be(r0);
        MemoryTablePayload.ReadRegion(expected, 1).Should().Be(r1);
    }

    [Theory]
    [InlineData(0, 8)]
    [InlineData(1, 40)]
    [InlineData(8, 264)]
    public void MemoryTablePayload_size_is_8_plus_32_per_region(int regions, int bytes)
    {
        MemoryTablePayload.SizeFor(regions).Should().Be(bytes);
        MemoryTablePayload.HeaderSize.Should().Be(8);
        MemoryTablePayload.MaxRegions.Should().Be(8);
    }

    [Fact]
    public void MemoryTablePayload_ignores_the_padding_word()
    {
        byte[] wire = new byte[40];
        BinaryPrimitives.WriteUInt32LittleEndian(wire, 1);
        BinaryPrimitives.WriteUInt32LittleEndian(wire.AsSpan(4), 0xDEADBEEF);
        RegionWire(1, 2, 3, 4).CopyTo(wire, 8);

        MemoryTablePayload.ReadCount(wire).Should().Be(1u);
        MemoryTablePayload.ReadRegion(wire, 0).Should().Be(new MemoryRegionPayload(1, 2, 3, 4));
    }

    // ---- single region (40): u64 padding @0, region @8 ----

    [Fact]
    public void SingleRegionPayload_has_8_bytes_of_padding_before_the_region()
    {
        byte[] expected = new byte[40];
        RegionWire(0x0102030405060708, 0x1000, 0x7F00_0000_1000, 0x2000).CopyTo(expected, 8);
        var region = new MemoryRegionPayload(0x0102030405060708, 0x1000, 0x7F00_0000_1000, 0x2000);

        SingleRegionPayload.Encode(region).Should().Equal(expected);
        SingleRegionPayload.Size.Should().Be(40);

        expected.AsSpan(0, 8).Fill(0xFF); // padding content is irrelevant when reading
        SingleRegionPayload.Read(expected).Should().Be(region);
    }

    // ---- log description (16): mmap_size @0, mmap_offset @8 ----

    [Fact]
    public void LogDescriptionPayload_is_mmap_size_then_mmap_offset()
    {
        byte[] wire = Bytes(16, b =>
        {
            BinaryPrimitives.WriteUInt64LittleEndian(b, 0x0000_0000_0010_0000);
            BinaryPrimitives.WriteUInt64LittleEndian(b[8..], 0x0000_0000_0000_2000);
        });

        new LogDescriptionPayload(0x10_0000, 0x2000).Encode().Should().Equal(wire);
        LogDescriptionPayload.Read(wire).Should().Be(new LogDescriptionPayload(0x10_0000, 0x2000));
        LogDescriptionPayload.Size.Should().Be(16);
    }

    // ---- device config (12 + size): offset @0, size @4, flags @8, data @12 ----

    [Fact]
    public void DeviceConfigHeader_is_offset_size_flags_then_data()
    {
        byte[] data = [0xA1, 0xA2, 0xA3, 0xA4, 0xA5];
        byte[] wire = Bytes(12 + data.Length, b =>
        {
            BinaryPrimitives.WriteUInt32LittleEndian(b, 0x10);
            BinaryPrimitives.WriteUInt32LittleEndian(b[4..], 5);
            BinaryPrimitives.WriteUInt32LittleEndian(b[8..], 1);
            data.CopyTo(b[12..]);
        });

        new DeviceConfigHeader(0x10, 5, 1).Encode(data).Should().Equal(wire);
        DeviceConfigHeader.Read(wire).Should().Be(new DeviceConfigHeader(0x10, 5, 1));
        DeviceConfigHeader.Length.Should().Be(12);
        DeviceConfigHeader.FlagMigration.Should().Be(1u, "QEMU VHOST_SET_CONFIG_TYPE_MIGRATION = 1");
    }

    // ---- inflight description (24): mmap_size @0, mmap_offset @8, u16 num_queues @16, u16 queue_size @18, 4 bytes tail padding ----

    [Fact]
    public void InflightDescriptionPayload_is_24_bytes_with_zeroed_tail_padding()
    {
        byte[] wire = Bytes(24, b =>
        {
            BinaryPrimitives.WriteUInt64LittleEndian(b, 0x0102030405060708);
            BinaryPrimitives.WriteUInt64LittleEndian(b[8..], 0x1112131415161718);
            BinaryPrimitives.WriteUInt16LittleEndian(b[16..], 0x2122);
            BinaryPrimitives.WriteUInt16LittleEndian(b[18..], 0x3132);
        });

        var d = new InflightDescriptionPayload(0x0102030405060708, 0x1112131415161718, 0x2122, 0x3132);
        d.Encode().Should().Equal(wire);
        InflightDescriptionPayload.Size.Should().Be(24);

        wire.AsSpan(20).Fill(0xFF); // tail padding content is irrelevant when reading
        InflightDescriptionPayload.Read(wire).Should().Be(d);
    }

    // ---- IOTLB (32): iova @0, size @8, uaddr @16, u8 perm @24, u8 type @25, 6 bytes padding ----

    [Fact]
    public void IotlbPayload_reads_perm_at_24_and_type_at_25_of_a_32_byte_message()
    {
        byte[] wire = Bytes(32, b =>
        {
            BinaryPrimitives.WriteUInt64LittleEndian(b, 0x0102030405060708);
            BinaryPrimitives.WriteUInt64LittleEndian(b[8..], 0x1112131415161718);
            BinaryPrimitives.WriteUInt64LittleEndian(b[16..], 0x2122232425262728);
            b[24] = 3; // RW
            b[25] = 2; // UPDATE
            b[26..].Fill(0xEE);
        });

        IotlbPayload.Read(wire).Should().Be(new IotlbPayload(0x0102030405060708, 0x1112131415161718, 0x2122232425262728, 3, 2));
        IotlbPayload.WireSize.Should().Be(32);
    }

    // ---- vring area (24): u64 index|flags @0, size @8, offset @16 ----

    [Fact]
    public void VringAreaPayload_is_index_word_size_offset()
    {
        byte[] wire = Bytes(24, b =>
        {
            BinaryPrimitives.WriteUInt64LittleEndian(b, 0x103); // ring 3, no fd
            BinaryPrimitives.WriteUInt64LittleEndian(b[8..], 0x1000);
            BinaryPrimitives.WriteUInt64LittleEndian(b[16..], 0x0102030405060708);
        });

        new VringAreaPayload(0x103, 0x1000, 0x0102030405060708).Encode().Should().Equal(wire);
        VringAreaPayload.WireSize.Should().Be(24);
    }

    // ---- device state transfer (8): u32 direction @0, u32 phase @4 ----

    [Fact]
    public void DeviceStateTransferPayload_is_direction_then_phase()
    {
        byte[] wire = [0x01, 0x00, 0x00, 0x00, 0x02, 0x03, 0x04, 0x05];

        DeviceStateTransferPayload.Read(wire).Should().Be(new DeviceStateTransferPayload(1, 0x05040302));
        DeviceStateTransferPayload.Size.Should().Be(8);
    }

    // ---- kick/call/err word: bits 0-7 index, bit 8 no-fd, 9-63 reserved ----

    [Theory]
    [InlineData(0, false, 0x000UL)]
    [InlineData(0, true, 0x100UL)]
    [InlineData(0x12, false, 0x012UL)]
    [InlineData(0xFF, true, 0x1FFUL)]
    public void VringFileWord_puts_index_in_bits_0_to_7_and_no_fd_in_bit_8(int index, bool noFd, ulong expected)
    {
        VringFileWord.Make(index, noFd).Should().Be(expected);
    }

    [Fact]
    public void VringFileWord_masks_match_the_spec()
    {
        VringFileWord.IndexMask.Should().Be(0xFFUL);
        VringFileWord.NoFdFlag.Should().Be(0x100UL);
        VringFileWord.ReservedMask.Should().Be(0xFFFF_FFFF_FFFF_FE00UL);
        (VringFileWord.IndexMask | VringFileWord.NoFdFlag | VringFileWord.ReservedMask).Should().Be(ulong.MaxValue);
    }
}
