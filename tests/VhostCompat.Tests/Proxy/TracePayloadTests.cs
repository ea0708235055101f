using System.Buffers.Binary;
using System.Text.Json;
using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.Tests.Proxy;

/// <summary>Every payload kind of a front-end request (and of the replies with a layout) decoded into named fields, in text and JSON.</summary>
public sealed class TracePayloadTests
{
    private static string[] Names(JsonElement bits) => bits.GetProperty("names").EnumerateArray().Select(n => n.GetString()!).ToArray();

    [Fact]
    public void SetFeatures_names_the_virtio_bits_of_the_device_type()
    {
        var t = new TraceHarness();
        ulong features = VirtioFeatureBits.Version1 | VirtioFeatureBits.NetMrgRxbuf | VirtioFeatureBits.ProtocolFeatures;

        t.Request(FrontendRequest.SetFeatures, U64Payload.Encode(features));

        t.LastText.Should().Contain("F>B SET_FEATURES flags=0x1(v1) size=8 features=0x140008000(mrg_rxbuf|protocol_features|version_1)");
        var f = t.LastFields.GetProperty("features");
        f.GetProperty("value").GetString().Should().Be("0x140008000");
        Names(f).Should().Equal("mrg_rxbuf", "protocol_features", "version_1");
    }

    [Fact]
    public void GetFeatures_reply_uses_the_configured_device_type()
    {
        var t = new TraceHarness();
        t.Json.DeviceType = VirtioDeviceType.Block;
        t.Text.DeviceType = VirtioDeviceType.Block;

        t.Request(FrontendRequest.GetFeatures, []);
        t.Reply(FrontendRequest.GetFeatures, U64Payload.Encode((1UL << 9) | (1UL << 32)));

        t.LastText.Should().Contain("B>F GET_FEATURES flags=0x5(v1,REPLY) size=8 features=0x100000200(flush|version_1)");
        Names(t.LastFields.GetProperty("features")).Should().Equal("flush", "version_1");
    }

    [Fact]
    public void Protocol_features_are_named_in_request_and_reply()
    {
        var t = new TraceHarness();
        ulong mask = (1UL << 0) | (1UL << 3) | (1UL << 5) | (1UL << 40);

        t.Request(FrontendRequest.SetProtocolFeatures, U64Payload.Encode(mask));
        t.LastText.Should().Contain("protocol-features=0x10000000029(mq|reply_ack|backend_req|bit40)");

        t.Request(FrontendRequest.GetProtocolFeatures, []);
        t.Reply(FrontendRequest.GetProtocolFeatures, U64Payload.Encode(1UL << 9));
        Names(t.LastFields.GetProperty("protocol-features")).Should().Equal("config");
    }

    [Fact]
    public void SetStatus_names_the_device_status_bits()
    {
        var t = new TraceHarness();

        t.Request(FrontendRequest.SetStatus, U64Payload.Encode(0x0F));

        t.LastText.Should().Contain("status=0xf(acknowledge|driver|driver_ok|features_ok)");
        Names(t.LastFields.GetProperty("status")).Should().Equal("acknowledge", "driver", "driver_ok", "features_ok");
    }

    [Fact]
    public void Vring_state_requests_show_index_and_num()
    {
        var t = new TraceHarness();

        t.Request(FrontendRequest.SetVringNum, new VringStatePayload(1, 256).Encode());

        t.LastText.Should().EndWith("SET_VRING_NUM flags=0x1(v1) size=8 index=1 num=256");
        t.LastFields.GetProperty("index").GetUInt32().Should().Be(1);
        t.LastFields.GetProperty("num").GetUInt32().Should().Be(256);
    }

    [Fact]
    public void SetVringEndian_adds_the_endianness_name()
    {
        var t = new TraceHarness();

        t.Request(FrontendRequest.SetVringEndian, new VringStatePayload(0, 1).Encode());

        t.LastFields.GetProperty("endian").GetString().Should().Be("big");
    }

    [Fact]
    public void SetVringAddr_shows_every_address_in_hex_and_the_log_flag()
    {
        var t = new TraceHarness();
        var addr = new VringAddressPayload(2, VringAddressPayload.FlagLog, 0x7f0000001000, 0x7f0000003000, 0x7f0000002000, 0x4000);

        t.Request(FrontendRequest.SetVringAddr, addr.Encode());

        t.LastText.Should().Contain("index=2 addr-flags=0x1(log) desc=0x7f0000001000 used=0x7f0000003000 avail=0x7f0000002000 log=0x4000");
        t.LastFields.GetProperty("desc").GetString().Should().Be("0x7f0000001000");
        t.LastFields.GetProperty("avail").GetString().Should().Be("0x7f0000002000");
    }

    [Fact]
    public void Vring_file_word_shows_index_no_fd_flag_and_reserved_bits()
    {
        var t = new TraceHarness();

        t.Request(FrontendRequest.SetVringCall, U64Payload.Encode(VringFileWord.Make(3, noFd: true)));
        t.LastText.Should().EndWith("SET_VRING_CALL flags=0x1(v1) size=8 index=3 no-fd=true");
        t.LastFields.GetProperty("no-fd").GetBoolean().Should().BeTrue();

        t.Request(FrontendRequest.SetVringKick, U64Payload.Encode(0x1000 | 1));
        t.LastFields.GetProperty("index").GetUInt32().Should().Be(1);
        t.LastFields.GetProperty("no-fd").GetBoolean().Should().BeFalse();
        t.LastFields.GetProperty("reserved").GetString().Should().Be("0x1000");
    }

    [Fact]
    public void SetMemTable_lists_every_region()
    {
        var t = new TraceHarness();
        MemoryRegionPayload[] regions =
        [
            new(0, 0xa0000, 0x7f1200000000, 0),
            new(0x100000, 0xff00000, 0x7f1200100000, 0x100000),
        ];

        t.Request(FrontendRequest.SetMemTable, MemoryTablePayload.Encode(regions));

        t.LastText.Should().Contain("regions=2 region0.gpa=0x0 region0.size=0xa0000 region0.uaddr=0x7f1200000000 region0.mmap-offset=0x0 "
            + "region1.gpa=0x100000 region1.size=0xff00000 region1.uaddr=0x7f1200100000 region1.mmap-offset=0x100000");
        var list = t.LastFields.GetProperty("region").EnumerateArray().ToArray();
        list.Should().HaveCount(2);
        list[1].GetProperty("gpa").GetString().Should().Be("0x100000");
        list[1].GetProperty("size").GetString().Should().Be("0xff00000");
        list[1].GetProperty("uaddr").GetString().Should().Be("0x7f1200100000");
        list[1].GetProperty("mmap-offset").GetString().Should().Be("0x100000");
    }

    [Fact]
    public void AddMemReg_shows_the_single_region()
    {
        var t = new TraceHarness();

        t.Request(FrontendRequest.AddMemReg, SingleRegionPayload.Encode(new MemoryRegionPayload(0x200000, 0x1000, 0x7f00aa000000, 0x2000)));

        t.LastText.Should().EndWith("ADD_MEM_REG flags=0x1(v1) size=40 gpa=0x200000 size=0x1000 uaddr=0x7f00aa000000 mmap-offset=0x2000");
        t.LastFields.GetProperty("mmap-offset").GetString().Should().Be("0x2000");
    }

    [Fact]
    public void SetLogBase_shows_mmap_size_and_offset()
    {
        var t = new TraceHarness();

        t.Request(FrontendRequest.SetLogBase, new LogDescriptionPayload(0x8000, 0x40).Encode());

        t.LastText.Should().EndWith("mmap-size=0x8000 mmap-offset=0x40");
    }

    [Fact]
    public void Inflight_description_is_decoded_in_request_and_reply()
    {
        var t = new TraceHarness();

        t.Request(FrontendRequest.GetInflightFd, new InflightDescriptionPayload(0, 0, 2, 128).Encode());
        t.LastText.Should().EndWith("mmap-size=0x0 mmap-offset=0x0 num-queues=2 queue-size=128");

        t.Reply(FrontendRequest.GetInflightFd, new InflightDescriptionPayload(0x3000, 0, 2, 128).Encode());
        t.LastFields.GetProperty("mmap-size").GetString().Should().Be("0x3000");
        t.LastFields.GetProperty("num-queues").GetUInt32().Should().Be(2);
    }

    [Fact]
    public void Config_shows_offset_size_flags_and_the_bytes()
    {
        var t = new TraceHarness();
        byte[] mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

        t.Request(FrontendRequest.SetConfig, new DeviceConfigHeader(0, 6, DeviceConfigHeader.FlagMigration).Encode(mac));

        t.LastText.Should().EndWith("SET_CONFIG flags=0x1(v1) size=18 offset=0 size=6 config-flags=0x1(migration) data=525400123456");
        t.LastFields.GetProperty("data").GetString().Should().Be("525400123456");
        Names(t.LastFields.GetProperty("config-flags")).Should().Equal("migration");
    }

    [Fact]
    public void Config_bytes_are_cut_at_64()
    {
        var t = new TraceHarness();

        t.Request(FrontendRequest.GetConfig, new DeviceConfigHeader(0, 200, 0).Encode(new byte[200]));

        t.LastFields.GetProperty("data").GetString().Should().Be(new string('0', 128) + "...");
    }

    [Fact]
    public void SetDeviceStateFd_shows_direction_and_phase_and_its_reply()
    {
        var t = new TraceHarness();
        var p = new byte[8];
        BinaryPrimitives.WriteUInt32LittleEndian(p, 1);

        t.Request(FrontendRequest.SetDeviceStateFd, p);
        t.LastText.Should().EndWith("direction=load phase=stopped");

        t.Reply(FrontendRequest.SetDeviceStateFd, U64Payload.Encode(0x100));
        t.LastFields.GetProperty("result").GetUInt32().Should().Be(0);
        t.LastFields.GetProperty("no-fd").GetBoolean().Should().BeTrue();
    }

    [Fact]
    public void SendRarp_mtu_and_iotlb_are_named()
    {
        var t = new TraceHarness();

        t.Request(FrontendRequest.SendRarp, [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, 0, 0]);
        t.LastFields.GetProperty("mac").GetString().Should().Be("52:54:00:ab:cd:ef");

        t.Request(FrontendRequest.NetSetMtu, U64Payload.Encode(9000));
        t.LastFields.GetProperty("mtu").GetUInt32().Should().Be(9000);

        var iotlb = new byte[32];
        BinaryPrimitives.WriteUInt64LittleEndian(iotlb, 0x1000);
        BinaryPrimitives.WriteUInt64LittleEndian(iotlb.AsSpan(8), 0x2000);
        BinaryPrimitives.WriteUInt64LittleEndian(iotlb.AsSpan(16), 0x7f0000000000);
        iotlb[24] = 3;
        iotlb[25] = 2;
        t.Request(FrontendRequest.IotlbMsg, iotlb);
        t.LastText.Should().EndWith("iova=0x1000 size=0x2000 uaddr=0x7f0000000000 perm=rw type=update");
    }

    [Fact]
    public void Requests_without_payload_print_no_fields()
    {
        var t = new TraceHarness();

        t.Request(FrontendRequest.SetOwner, []);

        t.LastText.Should().EndWith("#1 F>B SET_OWNER flags=0x1(v1) size=0");
        t.LastFields.EnumerateObject().Should().BeEmpty();
        t.LastJson.GetProperty("code").GetUInt32().Should().Be(3);
    }

    [Fact]
    public void GetVringBase_reply_and_ack_replies_are_decoded()
    {
        var t = new TraceHarness();

        t.Request(FrontendRequest.GetVringBase, new VringStatePayload(1, 0).Encode());
        t.Reply(FrontendRequest.GetVringBase, new VringStatePayload(1, 4711).Encode());
        t.LastFields.GetProperty("num").GetUInt32().Should().Be(4711);

        t.Request(FrontendRequest.SetVringBase, new VringStatePayload(1, 4711).Encode(), MessageHeader.Version | MessageHeader.NeedReplyFlag);
        t.Reply(FrontendRequest.SetVringBase, U64Payload.Encode(0));
        t.LastText.Should().Contain("SET_VRING_BASE flags=0x5(v1,REPLY) size=8 ack=0 reply-to=SET_VRING_BASE#3");
    }

    [Fact]
    public void Unknown_codes_are_shown_as_length_and_hex()
    {
        var t = new TraceHarness();

        t.Send(Tr.F2B, 99, MessageHeader.Version, [0xde, 0xad, 0xbe, 0xef]);

        t.LastText.Should().EndWith("UNKNOWN(99) flags=0x1(v1) size=4 length=4 hex=deadbeef");
        t.LastFields.GetProperty("hex").GetString().Should().Be("deadbeef");
        t.LastJson.GetProperty("code").GetUInt32().Should().Be(99);
    }

    [Fact]
    public void Reserved_header_flags_are_shown()
    {
        var t = new TraceHarness();

        t.Send(Tr.F2B, (uint)FrontendRequest.GetFeatures, MessageHeader.Version | MessageHeader.NeedReplyFlag | 0x40, []);

        t.LastText.Should().Contain("flags=0x49(v1,NEED_REPLY,reserved:0x40)");
        var flags = t.LastJson.GetProperty("flags");
        flags.GetProperty("need-reply").GetBoolean().Should().BeTrue();
        flags.GetProperty("reply").GetBoolean().Should().BeFalse();
        flags.GetProperty("reserved").GetString().Should().Be("0x40");
        flags.GetProperty("version").GetUInt32().Should().Be(1);
    }
}

internal static class Tr
{
    public const VhostCompat.Proxy.TraceDirection F2B = VhostCompat.Proxy.TraceDirection.FrontendToBackend;
    public const VhostCompat.Proxy.TraceDirection B2F = VhostCompat.Proxy.TraceDirection.BackendToFrontend;
}
