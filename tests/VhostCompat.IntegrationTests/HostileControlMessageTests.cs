using System.Buffers.Binary;
using VhostCompat.Frontend;
using VhostCompat.IntegrationTests.Support;
using VhostCompat.Interop;
using VhostCompat.Protocol;

namespace VhostCompat.IntegrationTests;

/// <summary>HOSTILE-INPUTS.md group (a): malformed control messages from a raw frontend.</summary>
public sealed class HostileControlMessageTests : HostileTestBase
{
    [Theory]
    [InlineData(1)]
    [InlineData(6)]
    [InlineData(11)]
    public async Task A1_truncated_header_then_close_ends_the_session_and_closes_its_fds(int bytes)
    {
        using (var efd = FileDescriptor.CreateEventFd())
        {
            byte[] frame = MessageFraming.Encode((uint)FrontendRequest.SetVringCall, 0x1, U64(0));
            Raw.SendBytes(frame.AsSpan(0, bytes), [efd.Value]);
        }
        await AssertNoLeaksAfterDisconnectAsync();
        (await EndReasonAsync()).Should().Contain("closed inside a message");
    }

    [Fact]
    public async Task A1_stalled_header_is_disconnected_after_the_message_timeout()
    {
        Raw.SendBytes(new byte[] { 1, 0, 0 });
        (await Raw.IsClosedAsync(TimeSpan.FromSeconds(3))).Should().BeTrue();
        (await EndReasonAsync()).Should().Contain("not finished within");
        await AssertNoLeaksAfterDisconnectAsync();
    }

    [Fact]
    public async Task A2_fragmented_message_with_fds_on_the_first_fragment_is_reassembled()
    {
        await NegotiateProtocolAsync();
        byte[] frame = MessageFraming.Encode((uint)FrontendRequest.SetVringCall, 0x9, U64(1));
        using (var call = new EventNotifier())
        {
            Raw.SendBytes(frame.AsSpan(0, 1), [call.Fd]);
        }
        for (int i = 1; i < frame.Length; i++)
        {
            await Task.Delay(5);
            Raw.SendBytes(frame.AsSpan(i, 1));
        }

        var reply = await Raw.ReceiveAsync();
        BinaryPrimitives.ReadUInt64LittleEndian(reply!.Value.Payload).Should().Be(0);
        await AssertStillUsableAsync();
        await AssertNoLeaksAfterDisconnectAsync();
    }

    [Theory]
    [InlineData(0x1001u)]
    [InlineData(0x10000u)]
    [InlineData(0xFFFFFFFFu)]
    public async Task A3_oversized_size_field_closes_without_allocating_and_closes_fds(uint size)
    {
        var header = new byte[12];
        new MessageHeader((uint)FrontendRequest.SetFeatures, 0x1, size).Write(header);
        long before = GC.GetTotalAllocatedBytes(precise: true);
        using (var efd = FileDescriptor.CreateEventFd())
        {
            Raw.SendBytes(header, [efd.Value]);
        }
        (await Raw.IsClosedAsync()).Should().BeTrue();
        (GC.GetTotalAllocatedBytes(precise: true) - before).Should().BeLessThan(1 << 20, "the claimed size must not be allocated");
        (await EndReasonAsync()).Should().Contain("exceeds");
        await AssertNoLeaksAfterDisconnectAsync();
    }

    public static TheoryData<uint, int> Undersized => new()
    {
        { (uint)FrontendRequest.SetVringNum, 0 },
        { (uint)FrontendRequest.SetVringNum, 4 },
        { (uint)FrontendRequest.SetVringNum, 7 },
        { (uint)FrontendRequest.SetFeatures, 0 },
        { (uint)FrontendRequest.SetFeatures, 4 },
        { (uint)FrontendRequest.SetFeatures, 7 },
        { (uint)FrontendRequest.SetVringAddr, 0 },
        { (uint)FrontendRequest.SetVringAddr, 39 },
    };

    [Theory]
    [MemberData(nameof(Undersized))]
    public async Task A4_undersized_payload_is_rejected_and_state_is_unchanged(uint request, int size)
    {
        (await Raw.AckAsync(request, 0x9, new byte[size])).Should().Be(1);
        Fx.Device.AckedFeatures.Should().BeEmpty();
        await AssertStillUsableAsync();
        await AssertNoLeaksAfterDisconnectAsync();
    }

    [Fact]
    public async Task A5_payload_with_trailing_bytes_is_rejected_and_the_stream_stays_in_sync()
    {
        var payload = new byte[8 + 24];
        BinaryPrimitives.WriteUInt64LittleEndian(payload, Fx.Backend.OfferedFeatures);
        (await Raw.AckAsync(FrontendRequest.SetFeatures, payload)).Should().Be(1);
        Fx.Device.AckedFeatures.Should().BeEmpty();
        await AssertStillUsableAsync();
    }

    [Theory]
    [InlineData(0u, 0)]
    [InlineData(46u, 0)]
    [InlineData(0x1000u, 3)]
    [InlineData(0x7FFFFFFFu, 0)]
    [InlineData(0xFFFFFFFFu, 3)]
    public async Task A6_unknown_request_codes_are_rejected_and_their_fds_closed(uint code, int fds)
    {
        var notifiers = Enumerable.Range(0, fds).Select(_ => FileDescriptor.CreateEventFd()).ToArray();
        (await Raw.AckAsync(code, 0x9, [], notifiers.Select(n => n.Value).ToArray())).Should().Be(1);
        foreach (var n in notifiers)
        {
            n.Dispose();
        }

        Fx.Logs.Text.Should().Contain("unknown request code");
        await AssertStillUsableAsync();
        await AssertNoLeaksAfterDisconnectAsync();
    }

    [Fact]
    public async Task A6_unknown_request_without_need_reply_closes_the_connection()
    {
        Raw.Send(0x1000u, 0x1, []);
        (await Raw.IsClosedAsync()).Should().BeTrue();
        (await EndReasonAsync()).Should().Contain("refused without NEED_REPLY");
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(2u)]
    [InlineData(3u)]
    public async Task A7_bad_version_bits_always_close_the_connection(uint version)
    {
        Raw.Send((uint)FrontendRequest.GetFeatures, version | 0x8, []);
        (await Raw.IsClosedAsync()).Should().BeTrue();
        (await EndReasonAsync()).Should().Contain("unsupported protocol version");
    }

    [Fact]
    public async Task A8_reply_flag_on_a_request_is_rejected_without_state_change()
    {
        (await Raw.AckAsync((uint)FrontendRequest.SetFeatures, 0x1 | 0x4 | 0x8, U64(0))).Should().Be(1);
        Fx.Device.AckedFeatures.Should().BeEmpty();
        await AssertStillUsableAsync();
    }

    [Theory]
    [InlineData(0x10u)]
    [InlineData(0x80000000u)]
    public async Task A9_reserved_flag_bits_are_rejected(uint reserved)
    {
        (await Raw.AckAsync((uint)FrontendRequest.SetFeatures, 0x9 | reserved, U64(0))).Should().Be(1);
        Fx.Device.AckedFeatures.Should().BeEmpty();
        await AssertStillUsableAsync();
    }

    [Fact]
    public async Task A10_need_reply_on_requests_with_their_own_reply_gets_exactly_one_reply()
    {
        Raw.Send(FrontendRequest.GetFeatures, needReply: true);
        Raw.Send(FrontendRequest.GetProtocolFeatures, needReply: true);
        var first = await Raw.ReceiveAsync();
        var second = await Raw.ReceiveAsync();
        first!.Value.Header.Request.Should().Be((uint)FrontendRequest.GetFeatures);
        BinaryPrimitives.ReadUInt64LittleEndian(first.Value.Payload).Should().Be(Fx.Backend.OfferedFeatures);
        second!.Value.Header.Request.Should().Be((uint)FrontendRequest.GetProtocolFeatures, "no extra ack frame may sit between the two replies");
    }

    [Fact]
    public async Task A10_need_reply_without_reply_ack_negotiated_is_still_acknowledged()
    {
        // Documented choice: whenever NEED_REPLY is set we answer (QEMU sets it on IOTLB/POSTCOPY regardless).
        (await Raw.AckAsync(FrontendRequest.SetOwner)).Should().Be(0);
    }

    [Fact]
    public async Task A11_fds_on_requests_that_take_none_are_rejected_and_closed()
    {
        var efds = Enumerable.Range(0, 8).Select(_ => FileDescriptor.CreateEventFd()).ToArray();
        var memfd = Memfd(4096);
        Raw.Send(FrontendRequest.GetFeatures, fds: efds.Select(e => e.Value).ToArray(), needReply: true);
        var reply = await Raw.ReceiveAsync();
        BinaryPrimitives.ReadUInt64LittleEndian(reply!.Value.Payload).Should().Be(1, "refused: an ack of 1, not the feature word");
        (await Raw.AckAsync(FrontendRequest.SetVringNum, State(0, 64), [memfd.Value])).Should().Be(1);
        foreach (var e in efds)
        {
            e.Dispose();
        }

        memfd.Dispose();
        await AssertStillUsableAsync();
        await AssertNoLeaksAfterDisconnectAsync();
    }

    [Fact]
    public async Task A12_wrong_fd_counts_are_rejected_closed_and_the_rings_fds_stay_intact()
    {
        await NegotiateProtocolAsync();
        var call = FileDescriptor.CreateEventFd();
        (await Raw.AckAsync(FrontendRequest.SetVringCall, U64(0), [call.Value])).Should().Be(0);
        call.Dispose();
        var a = FileDescriptor.CreateEventFd();
        var b = FileDescriptor.CreateEventFd();
        (await Raw.AckAsync(FrontendRequest.SetVringKick, U64(0x100), [a.Value])).Should().Be(1, "no-fd flag with an fd");
        (await Raw.AckAsync(FrontendRequest.SetVringKick, U64(0))).Should().Be(1, "fd expected, none sent");
        (await Raw.AckAsync(FrontendRequest.SetVringCall, U64(0), [a.Value, b.Value])).Should().Be(1, "two fds");
        (await Raw.AckAsync(FrontendRequest.AddMemReg, new byte[40])).Should().Be(1);
        (await Raw.AckAsync(FrontendRequest.AddMemReg, new byte[40], [a.Value, b.Value])).Should().Be(1);
        (await Raw.AckAsync(FrontendRequest.SetBackendReqFd)).Should().Be(1);
        (await Raw.AckAsync(FrontendRequest.SetBackendReqFd, null, [a.Value, b.Value])).Should().Be(1);
        a.Dispose();
        b.Dispose();
        Fx.Logs.Text.Should().Contain("fds attached");
        await AssertStillUsableAsync();
        await AssertNoLeaksAfterDisconnectAsync();
    }

    public static TheoryData<uint> BadRingIndexes => new() { 2u, 0xFFu, 0x100u, 0xFFFFFFFFu };

    [Theory]
    [MemberData(nameof(BadRingIndexes))]
    public async Task A15_ring_index_out_of_range_is_rejected_on_the_full_width_value(uint index)
    {
        await NegotiateProtocolAsync();
        (await Raw.AckAsync(FrontendRequest.SetVringNum, State(index, 64))).Should().Be(1);
        (await Raw.AckAsync(FrontendRequest.SetVringBase, State(index, 0))).Should().Be(1);
        (await Raw.AckAsync(FrontendRequest.SetVringEnable, State(index, 1))).Should().Be(1);
        (await Raw.AckAsync(FrontendRequest.SetVringAddr, new VringAddressPayload(index, 0, 0, 0, 0, 0).Encode())).Should().Be(1);
        Raw.Send(FrontendRequest.GetVringBase, State(index, 0), needReply: false);
        (await Raw.IsClosedAsync()).Should().BeTrue("GET_VRING_BASE for a ring that does not exist cannot be answered and has no NEED_REPLY");
    }

    [Theory]
    [InlineData(2ul)]
    [InlineData(0xFFul)]
    public async Task A15_kick_call_err_index_beyond_the_queue_count_is_rejected(ulong index)
    {
        var e = FileDescriptor.CreateEventFd();
        (await Raw.AckAsync(FrontendRequest.SetVringKick, U64(index), [e.Value])).Should().Be(1);
        (await Raw.AckAsync(FrontendRequest.SetVringCall, U64(index), [e.Value])).Should().Be(1);
        e.Dispose();
        (await Raw.AckAsync(FrontendRequest.SetVringErr, U64(index | 0x100))).Should().Be(1);
        await AssertNoLeaksAfterDisconnectAsync();
    }

    [Theory]
    [InlineData(1ul << 9)]
    [InlineData(1ul << 63)]
    public async Task A16_reserved_bits_in_the_kick_word_are_rejected(ulong reserved)
    {
        (await Raw.AckAsync(FrontendRequest.SetVringKick, U64(0x100 | reserved))).Should().Be(1);
        Fx.Logs.Text.Should().Contain("reserved bits");
    }

    [Fact]
    public async Task A17_set_vring_enable_before_protocol_features_or_with_a_bad_value_is_rejected()
    {
        (await Raw.AckAsync(FrontendRequest.SetVringEnable, State(0, 1))).Should().Be(1, "protocol features not negotiated yet");
        await NegotiateProtocolAsync();
        (await Raw.AckAsync(FrontendRequest.SetVringEnable, State(0, 2))).Should().Be(1);
        (await Raw.AckAsync(FrontendRequest.SetVringEnable, State(0, 1))).Should().Be(0);
        await SetFeaturesAsync(0); // acked without VHOST_USER_F_PROTOCOL_FEATURES: enable is illegal again
        (await Raw.AckAsync(FrontendRequest.SetVringEnable, State(0, 1))).Should().Be(1);
    }

    public static TheoryData<uint, int, int> GatedRequests => new()
    {
        { (uint)FrontendRequest.GetQueueNum, 0, 0 },
        { (uint)FrontendRequest.SetLogBase, 16, 1 },
        // GET_INFLIGHT_FD's refusal is an empty description, not an ack: see InflightTrackingTests.Hostile.
        { (uint)FrontendRequest.SetInflightFd, 24, 1 },
        { (uint)FrontendRequest.AddMemReg, 40, 1 },
        { (uint)FrontendRequest.RemMemReg, 40, 0 },
        { (uint)FrontendRequest.GetMaxMemSlots, 0, 0 },
        { (uint)FrontendRequest.ResetDevice, 0, 0 },
        { (uint)FrontendRequest.SetConfig, 13, 0 },
        { (uint)FrontendRequest.IotlbMsg, 32, 0 },
        { (uint)FrontendRequest.PostcopyAdvise, 0, 0 },
        { (uint)FrontendRequest.PostcopyListen, 0, 0 },
        { (uint)FrontendRequest.PostcopyEnd, 0, 0 },
        { (uint)FrontendRequest.SetStatus, 8, 0 },
        { (uint)FrontendRequest.GetStatus, 0, 0 },
        { (uint)FrontendRequest.SetBackendReqFd, 0, 1 },
        { (uint)FrontendRequest.NetSetMtu, 8, 0 },
        { (uint)FrontendRequest.SendRarp, 8, 0 },
        { (uint)FrontendRequest.SetDeviceStateFd, 8, 1 },
        { (uint)FrontendRequest.GetShmemConfig, 0, 0 },
        { (uint)FrontendRequest.GetVringBaseSkipDrain, 8, 0 },
    };

    [Theory]
    [MemberData(nameof(GatedRequests))]
    public async Task A18_requests_gated_by_a_protocol_feature_are_refused_until_it_is_negotiated(uint request, int size, int fds)
    {
        var payload = new byte[size];
        if (request == (uint)FrontendRequest.SetConfig)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(payload.AsSpan(4), 1);
        }

        if (request == (uint)FrontendRequest.NetSetMtu)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(payload, 1500);
        }

        using (var memfd = Memfd(1 << 16))
        {
            var attached = fds == 1 ? new[] { memfd.Value } : [];
            (await Raw.AckAsync(request, 0x9, payload, attached)).Should().Be(1);
        }

        Fx.Logs.Text.Should().Contain("was not negotiated");
        await AssertStillUsableAsync();
        await AssertNoLeaksAfterDisconnectAsync();
    }

    [Fact]
    public async Task A18_get_config_without_the_config_feature_gets_an_empty_reply()
    {
        Raw.Send(FrontendRequest.GetConfig, new DeviceConfigHeader(0, 4, 0).Encode(new byte[4]));
        var reply = await Raw.ReceiveAsync();
        reply!.Value.Header.Size.Should().Be(0);
    }

    public static TheoryData<uint, uint, uint, int> ConfigAbuse => new()
    {
        { 0xFFFFFFFF, 1, 0, 1 },   // offset + size overflows 32 bits
        { 0, 0, 0, 0 },            // size 0
        { 0, 17, 0, 17 },          // larger than the 16-byte config space
        { 12, 8, 0, 8 },           // runs past the end
        { 0, 4, 0, 3 },            // payload length differs from size
        { 0, 4, 2, 4 },            // unknown flags
    };

    [Theory]
    [MemberData(nameof(ConfigAbuse))]
    public async Task A19_config_space_abuse_is_rejected_and_config_is_unchanged(uint offset, uint size, uint flags, int dataLength)
    {
        await NegotiateProtocolAsync();
        byte[] before = Fx.Device.Config.ToArray();
        byte[] payload = new DeviceConfigHeader(offset, size, flags).Encode(new byte[dataLength]);
        (await Raw.AckAsync(FrontendRequest.SetConfig, payload)).Should().Be(1);
        Raw.Send(FrontendRequest.GetConfig, payload);
        (await Raw.ReceiveAsync())!.Value.Header.Size.Should().Be(0, "a failed GET_CONFIG is answered with an empty payload");
        Fx.Device.Config.Should().Equal(before);
        await AssertStillUsableAsync();
    }

    [Fact]
    public async Task A19_write_to_a_read_only_config_field_is_refused_unless_migration()
    {
        await NegotiateProtocolAsync();
        byte[] write = new DeviceConfigHeader(8, 2, 0).Encode(new byte[] { 7, 7 });
        (await Raw.AckAsync(FrontendRequest.SetConfig, write)).Should().Be(1);
        Fx.Device.Config[8].Should().Be(0xA8);
        byte[] migration = new DeviceConfigHeader(8, 2, DeviceConfigHeader.FlagMigration).Encode(new byte[] { 7, 7 });
        (await Raw.AckAsync(FrontendRequest.SetConfig, migration)).Should().Be(0);
        Fx.Device.Config[8].Should().Be(7);
    }

    [Fact]
    public async Task A20_inband_notifications_are_never_accepted()
    {
        (await Raw.AckAsync(FrontendRequest.SetProtocolFeatures, U64((ulong)VhostUserProtocolFeatures.InbandNotifications))).Should().Be(1);
        (await Raw.AckAsync(FrontendRequest.SetProtocolFeatures,
            U64((ulong)(VhostUserProtocolFeatures.InbandNotifications | VhostUserProtocolFeatures.ReplyAck | VhostUserProtocolFeatures.BackendReq)))).Should().Be(1);
        Fx.Logs.Text.Should().Contain("never offered");
    }

    [Fact]
    public async Task A21_out_of_range_scalars_are_rejected_and_the_value_read_back_is_unchanged()
    {
        await NegotiateProtocolAsync();
        (await Raw.AckAsync(FrontendRequest.SetStatus, U64(0x0B))).Should().Be(0);
        (await Raw.AckAsync(FrontendRequest.SetStatus, U64(0x100))).Should().Be(1);
        Raw.Send(FrontendRequest.GetStatus, needReply: false);
        BinaryPrimitives.ReadUInt64LittleEndian((await Raw.ReceiveAsync())!.Value.Payload).Should().Be(0x0B);
        (await Raw.AckAsync(FrontendRequest.NetSetMtu, U64(67))).Should().Be(1);
        (await Raw.AckAsync(FrontendRequest.NetSetMtu, U64(65536))).Should().Be(1);
        (await Raw.AckAsync(FrontendRequest.NetSetMtu, U64(9000))).Should().Be(0);
        (await Raw.AckAsync(FrontendRequest.SetVringEndian, State(0, 2))).Should().Be(1);
    }

    [Fact]
    public async Task Send_rarp_reaches_the_device_with_the_guest_mac_once_negotiated()
    {
        (await Raw.AckAsync(FrontendRequest.SendRarp, U64(0x563412005452))).Should().Be(1, "RARP not negotiated yet");
        (await Raw.AckAsync(FrontendRequest.SetProtocolFeatures, U64((ulong)VhostUserProtocolFeatures.Rarp))).Should().Be(1, "the default test device does not opt into RARP");
        Fx.Device.Announced.Should().BeEmpty();
    }

    [Fact]
    public async Task Acked_features_outside_the_offer_are_refused()
    {
        (await Raw.AckAsync(FrontendRequest.SetFeatures, U64(Fx.Backend.OfferedFeatures | (1UL << 63)))).Should().Be(1);
        Fx.Logs.Text.Should().Contain("were never offered");
        Fx.Device.AckedFeatures.Should().BeEmpty();
    }

    [Fact]
    public async Task Split_ring_sizes_must_be_powers_of_two_within_the_device_limit()
    {
        (await Raw.AckAsync(FrontendRequest.SetVringNum, State(0, 0))).Should().Be(1);
        (await Raw.AckAsync(FrontendRequest.SetVringNum, State(0, 100))).Should().Be(1);
        (await Raw.AckAsync(FrontendRequest.SetVringNum, State(0, 512))).Should().Be(1, "the device allows 256 at most");
        (await Raw.AckAsync(FrontendRequest.SetVringNum, State(0, 256))).Should().Be(0);
        (await Raw.AckAsync(FrontendRequest.SetVringBase, State(0, 0x10000))).Should().Be(1, "a split ring base is 16 bits");
        (await Raw.AckAsync(FrontendRequest.SetVringAddr, new VringAddressPayload(0, 0, 8, 0, 0, 0).Encode())).Should().Be(1, "descriptor table must be 16-byte aligned");
        (await Raw.AckAsync(FrontendRequest.SetVringAddr, new VringAddressPayload(0, 2, 0, 0, 0, 0).Encode())).Should().Be(1, "unknown address flags");
    }

    [Fact]
    public async Task A_healthy_second_backend_keeps_working_while_the_first_is_attacked()
    {
        await using var other = new BackendFixture();
        await other.WaitListeningAsync();
        Raw.SendBytes(new byte[] { 0xFF, 0xFF, 0xFF, 0xFF, 0x3, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF });
        (await Raw.IsClosedAsync()).Should().BeTrue();
        await using var fe = await VhostUserFrontend.ConnectAsync(other.SocketPath);
        (await fe.GetFeaturesAsync()).Should().Be(other.Backend.OfferedFeatures);

        // The attacked backend accepts the next frontend on the same socket.
        await using var again = await VhostUserFrontend.ConnectAsync(Fx.SocketPath);
        (await again.GetFeaturesAsync()).Should().Be(Fx.Backend.OfferedFeatures);
    }
}
