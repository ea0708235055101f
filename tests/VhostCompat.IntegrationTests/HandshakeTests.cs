using VhostCompat.Backend;
using VhostCompat.Frontend;
using VhostCompat.IntegrationTests.Support;
using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.IntegrationTests;

public sealed class HandshakeTests
{
    private const VhostUserProtocolFeatures AllProtocol = (VhostUserProtocolFeatures)ulong.MaxValue;

    [Fact]
    public async Task Full_handshake_over_a_unix_socket_starts_both_rings_with_memfd_memory()
    {
        await using var fx = new BackendFixture();
        await fx.WaitListeningAsync();
        await using var fe = await VhostUserFrontend.ConnectAsync(fx.SocketPath);

        ulong offered = await fe.GetFeaturesAsync();
        offered.Should().Be(fx.Device.DeviceFeatures | VirtioFeatureBits.ProtocolFeatures | VirtioFeatureBits.LogAll);
        var protocol = await fe.GetProtocolFeaturesAsync();
        protocol.Should().HaveFlag(VhostUserProtocolFeatures.ReplyAck).And.HaveFlag(VhostUserProtocolFeatures.Mq)
            .And.HaveFlag(VhostUserProtocolFeatures.Config).And.HaveFlag(VhostUserProtocolFeatures.ConfigureMemSlots);
        protocol.Should().HaveFlag(VhostUserProtocolFeatures.LogShmfd, "dirty logging is what makes live migration possible");
        protocol.Should().NotHaveFlag(VhostUserProtocolFeatures.InflightShmfd, "inflight tracking is not implemented, so it must not be offered");
        await fe.SetProtocolFeaturesAsync(protocol);
        await fe.SetOwnerAsync();
        (await fe.GetQueueNumAsync()).Should().Be(2);
        (await fe.GetMaxMemSlotsAsync()).Should().Be(32);
        using var backendChannel = await fe.SetBackendReqFdAsync();

        using var call0 = new EventNotifier();
        using var err0 = new EventNotifier();
        await fe.SetVringCallAsync(0, call0);
        await fe.SetVringErrAsync(0, err0);
        await fe.SetFeaturesAsync(offered & ~VirtioFeatureBits.LogAll); // LOG_ALL is the migration switch, acked only with a log
        fx.Device.AckedFeatures.Should().ContainSingle().Which.Should().Be(fx.Device.DeviceFeatures);
        await fe.SetStatusAsync(DeviceStatus.Acknowledge | DeviceStatus.Driver | DeviceStatus.FeaturesOk);
        (await fe.GetStatusAsync()).Should().Be(DeviceStatus.Acknowledge | DeviceStatus.Driver | DeviceStatus.FeaturesOk);

        using var low = new GuestMemory(0, 1 << 20);
        using var high = new GuestMemory(0x1_0000_0000, 1 << 20);
        await fe.SetMemTableAsync([low, high]);

        using var kick0 = new EventNotifier();
        using var kick1 = new EventNotifier();
        // Ring 0 lives in the low region, ring 1 in the high one (addresses are frontend addresses).
        await SetUpRingAsync(fe, 0, low, 0x1000, kick0);
        await SetUpRingAsync(fe, 1, high, 0x1_0000_2000, kick1);
        await fe.SetVringEnableAsync(0, true);
        await fe.SetVringEnableAsync(1, true);
        await fe.SetStatusAsync(DeviceStatus.Acknowledge | DeviceStatus.Driver | DeviceStatus.FeaturesOk | DeviceStatus.DriverOk);

        fx.Device.QueueEvents.Where(q => q.Started).Select(q => q.Index).Distinct().Should().BeEquivalentTo([0, 1]);
        fx.Device.QueueEvents.Where(q => q.Index == 1 && q.Started).Should().OnlyContain(q => q.Size == 128 && q.NextAvailableIndex == 7);

        (await fe.GetConfigAsync(2, 4)).Should().Equal(0xA2, 0xA3, 0xA4, 0xA5);
        await fe.SetConfigAsync(0, new byte[] { 1, 2 });
        fx.Device.Config[..2].Should().Equal(1, 2);

        (await fe.GetVringBaseAsync(1)).Should().Be(7u);
        (await fe.GetVringBaseAsync(0)).Should().Be(0u);
        fx.Device.QueueEvents.Last().Should().Match<VirtqueueInfo>(q => !q.Started && q.Index == 0);
        fx.Logs.Text.Should().NotContain("Error:").And.NotContain("Warning:");
    }

    private static async Task SetUpRingAsync(VhostUserFrontend fe, int index, GuestMemory mem, ulong gpa, EventNotifier kick)
    {
        await fe.SetVringNumAsync(index, 128);
        await fe.SetVringBaseAsync(index, index == 1 ? 7u : 0u);
        mem.Write(gpa + (16 * 128) + 2, [(byte)(index == 1 ? 7 : 0), 0]); // avail.idx matches the base: nothing pending
        ulong desc = mem.ToFrontendAddress(gpa);
        ulong avail = desc + (16 * 128);
        ulong used = mem.ToFrontendAddress(gpa + 0x1000);
        await fe.SetVringAddrAsync(index, desc, used, avail);
        await fe.SetVringKickAsync(index, kick);
    }

    [Fact]
    public async Task Memory_slots_add_and_remove_regions_and_duplicates_are_idempotent()
    {
        await using var fx = new BackendFixture();
        await fx.WaitListeningAsync();
        await using var fe = await VhostUserFrontend.ConnectAsync(fx.SocketPath);
        await fe.NegotiateAsync(ulong.MaxValue, AllProtocol);

        using var a = new GuestMemory(0, 1 << 20);
        using var b = new GuestMemory(1 << 20, 1 << 20);
        await fe.AddMemoryRegionAsync(a);
        await fe.AddMemoryRegionAsync(a); // QEMU 7.2 repeats ADD_MEM_REG per queue pair
        await fe.AddMemoryRegionAsync(b);
        fx.Logs.Text.Should().Contain("Memory table: 2 region(s)");

        using var kick = new EventNotifier();
        await fe.SetVringNumAsync(0, 64);
        await fe.SetVringAddrAsync(0, b.ToFrontendAddress(1 << 20), b.ToFrontendAddress((1 << 20) + 0x2000), b.ToFrontendAddress((1 << 20) + 0x1000));
        await fe.SetVringKickAsync(0, kick);
        fx.Device.QueueEvents.Should().Contain(q => q.Index == 0 && q.Started);

        // Removing the region under a running ring stops that ring instead of leaving it on unmapped memory.
        await fe.RemoveMemoryRegionAsync(b);
        fx.Device.QueueEvents.Last().Should().Match<VirtqueueInfo>(q => q.Index == 0 && !q.Started);
        await fe.RemoveMemoryRegionAsync(b); // unknown region: harmless
        await fe.RemoveMemoryRegionAsync(a);
        fx.Logs.Text.Should().Contain("Memory table: 0 region(s)");
        ProcessResources.GuestMemoryMappings().Should().Be(2, "the backend unmapped both regions; only the frontend's own two mappings remain");
    }

    [Fact]
    public async Task Legacy_frontend_without_protocol_features_gets_enabled_rings()
    {
        await using var fx = new BackendFixture();
        await fx.WaitListeningAsync();
        await using var fe = await VhostUserFrontend.ConnectAsync(fx.SocketPath);
        await fe.SetOwnerAsync();
        await fe.SetFeaturesAsync(VirtioFeatureBits.Version1);
        using var mem = new GuestMemory(0, 1 << 20);
        await fe.SetMemTableAsync([mem]);
        using var kick = new EventNotifier();
        await fe.SetVringNumAsync(0, 64);
        await fe.SetVringAddrAsync(0, mem.FrontendAddress, mem.FrontendAddress + 0x2000, mem.FrontendAddress + 0x1000);
        await fe.SetVringKickAsync(0, kick);
        await fe.GetFeaturesAsync(); // without REPLY_ACK a GET is the only barrier (as QEMU does)
        fx.Device.QueueEvents.Should().Contain(q => q.Index == 0 && q.Started && q.Enabled);
    }

    [Fact]
    public async Task Send_rarp_after_migration_is_handed_to_a_device_that_opted_in()
    {
        var device = new TestDevice(protocol: VhostUserProtocolFeatures.Rarp);
        await using var fx = new BackendFixture(device);
        await fx.WaitListeningAsync();
        await using var raw = await RawFrontend.ConnectAsync(fx.SocketPath);
        (await raw.AckAsync(FrontendRequest.SetProtocolFeatures, U64Payload.Encode((ulong)(VhostUserProtocolFeatures.Rarp | VhostUserProtocolFeatures.ReplyAck)))).Should().Be(0);
        (await raw.AckAsync(FrontendRequest.SendRarp, U64Payload.Encode(0x563412005452))).Should().Be(0);
        (await raw.AckAsync(FrontendRequest.SendRarp, U64Payload.Encode(0x563412005453))).Should().Be(1, "a multicast MAC is refused");
        device.Announced.Should().Equal("525400123456");
    }

    [Fact]
    public async Task Reset_device_stops_rings_and_clears_negotiated_state()
    {
        await using var fx = new BackendFixture();
        await fx.WaitListeningAsync();
        await using var fe = await VhostUserFrontend.ConnectAsync(fx.SocketPath);
        await fe.NegotiateAsync(ulong.MaxValue, AllProtocol);
        await fe.SetStatusAsync(DeviceStatus.Acknowledge);
        using var mem = new GuestMemory(0, 1 << 20);
        await fe.SetMemTableAsync([mem]);
        using var kick = new EventNotifier();
        await fe.SetVringNumAsync(1, 64);
        await fe.SetVringAddrAsync(1, mem.FrontendAddress, mem.FrontendAddress + 0x2000, mem.FrontendAddress + 0x1000);
        await fe.SetVringKickAsync(1, kick);
        await fe.ResetDeviceAsync();
        fx.Device.QueueEvents.Last().Should().Match<VirtqueueInfo>(q => q.Index == 1 && !q.Started);
        (await fe.GetStatusAsync()).Should().Be(DeviceStatus.Reset);
        (await fe.GetVringBaseAsync(1)).Should().Be(0u);
    }
}
