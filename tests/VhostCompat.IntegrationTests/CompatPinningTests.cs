using VhostCompat.Backend;
using VhostCompat.Compat;
using VhostCompat.Frontend;
using VhostCompat.IntegrationTests.Support;
using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.IntegrationTests;

/// <summary>Pinning (--compat-profile) and the acked-state record, end to end over a real socket.</summary>
public sealed class CompatPinningTests
{
    private const VhostUserProtocolFeatures AllProtocol = (VhostUserProtocolFeatures)ulong.MaxValue;

    private static TestDevice BigDevice() => new(queues: 4,
        features: VirtioFeatureBits.Version1 | VirtioFeatureBits.EventIdx | VirtioFeatureBits.IndirectDesc | VirtioFeatureBits.NetMrgRxbuf
            | VirtioFeatureBits.NetMq | (1UL << 17) /* ctrl_vq */);

    [Fact]
    public async Task A_pinned_backend_offers_exactly_the_profile_whatever_the_build_can_do()
    {
        await using var fx = new BackendFixture(BigDevice(), o => o.CompatProfile = "type=net,version_1=on,mrg_rxbuf=on,max_ring=64,queues=2");
        await fx.WaitListeningAsync();
        await using var fe = await VhostUserFrontend.ConnectAsync(fx.SocketPath);
        ulong offered = await fe.GetFeaturesAsync();
        offered.Should().Be(VirtioFeatureBits.Version1 | VirtioFeatureBits.NetMrgRxbuf | VirtioFeatureBits.ProtocolFeatures | VirtioFeatureBits.LogAll,
            "event_idx, indirect_desc, mq and ctrl_vq are in the build but not in the pinned profile");
        await fe.SetProtocolFeaturesAsync(await fe.GetProtocolFeaturesAsync());
        (await fe.GetQueueNumAsync()).Should().Be(1, "queues=2 is one net queue pair");
        await fe.SetVringNumAsync(0, 64);
        Func<Task> tooBig = () => fe.SetVringNumAsync(0, 128);
        await tooBig.Should().ThrowAsync<VhostUserRequestException>("max_ring=64 is the ring-size limit under the pin");
        Func<Task> thirdQueue = () => fe.SetVringNumAsync(2, 64);
        await thirdQueue.Should().ThrowAsync<VhostUserRequestException>("the profile has 2 virtqueues although the device has 4");
        Func<Task> unpinnedBit = () => fe.SetFeaturesAsync(offered | VirtioFeatureBits.EventIdx);
        await unpinnedBit.Should().ThrowAsync<VhostUserRequestException>();
    }

    [Fact]
    public void A_profile_the_build_cannot_offer_is_refused_at_start()
    {
        var act = () => new VhostUserBackend(new TestDevice(), new VhostUserBackendOptions { SocketPath = "/tmp/x.sock", CompatProfile = "type=net,version_1=on,guest_csum=on" });
        act.Should().Throw<FormatException>().WithMessage("*guest_csum*");
    }

    [Fact]
    public async Task The_acked_state_is_recorded_at_DRIVER_OK_and_a_downgraded_build_refuses_to_start_naming_the_missing_bits()
    {
        string stateDir = Directory.CreateTempSubdirectory("vhostcompat-state-").FullName;
        await using (var fx = new BackendFixture(BigDevice(), o => { o.StateDirectory = stateDir; o.StateKey = "vm-1234.net0"; }))
        {
            await fx.WaitListeningAsync();
            await using var fe = await VhostUserFrontend.ConnectAsync(fx.SocketPath);
            ulong acked = await fe.NegotiateAsync(VirtioFeatureBits.Version1 | VirtioFeatureBits.NetMrgRxbuf | VirtioFeatureBits.EventIdx, AllProtocol);
            await fe.SetVringNumAsync(0, 128);
            await fe.SetStatusAsync(DeviceStatus.Acknowledge | DeviceStatus.Driver | DeviceStatus.FeaturesOk | DeviceStatus.DriverOk);
            acked.Should().NotBe(0);
        }

        var store = new AckedStateStore(stateDir);
        AckedStateRecord record = store.Load("vm-1234.net0")!;
        record.Should().NotBeNull();
        record.ProfilePinned.Should().BeFalse("no profile was pinned");
        record.AckedFeatures.Should().Be(VirtioFeatureBits.Version1 | VirtioFeatureBits.NetMrgRxbuf | VirtioFeatureBits.EventIdx);
        record.QueueSizes.Should().Contain(0, 128);

        // The same build restarts happily.
        var same = new VhostUserBackend(BigDevice(), new VhostUserBackendOptions { SocketPath = "/tmp/unused.sock", StateDirectory = stateDir, StateKey = "vm-1234.net0" });
        same.LoadRecord().Should().NotBeNull();

        // An older build without EVENT_IDX must refuse, naming the feature, instead of letting QEMU loop.
        var older = new TestDevice(queues: 4, features: VirtioFeatureBits.Version1 | VirtioFeatureBits.NetMrgRxbuf);
        var downgraded = new VhostUserBackend(older, new VhostUserBackendOptions { SocketPath = "/tmp/unused.sock", StateDirectory = stateDir, StateKey = "vm-1234.net0" });
        var act = () => downgraded.LoadRecord();
        act.Should().Throw<CompatibilityException>().Which.Message.Should().Contain("event_idx");
    }

    [Fact]
    public async Task A_record_made_under_a_profile_pins_it_again_and_a_contradicting_pin_is_refused()
    {
        string stateDir = Directory.CreateTempSubdirectory("vhostcompat-state-").FullName;
        const string Old = "type=net,version_1=on,mrg_rxbuf=on,max_ring=256,queues=2";
        await using (var fx = new BackendFixture(BigDevice(), o => { o.StateDirectory = stateDir; o.StateKey = "vm-9"; o.CompatProfile = Old; }))
        {
            await fx.WaitListeningAsync();
            await using var fe = await VhostUserFrontend.ConnectAsync(fx.SocketPath);
            await fe.NegotiateAsync(ulong.MaxValue, AllProtocol);
            await fe.SetStatusAsync(DeviceStatus.Acknowledge | DeviceStatus.Driver | DeviceStatus.FeaturesOk | DeviceStatus.DriverOk);
        }

        new AckedStateStore(stateDir).Load("vm-9")!.ProfilePinned.Should().BeTrue("--compat-profile pinned it");

        // Restart without a pin: the record's profile is offered again, not the build's whole capability.
        var restarted = new VhostUserBackend(BigDevice(), new VhostUserBackendOptions { SocketPath = "/tmp/unused.sock", StateDirectory = stateDir, StateKey = "vm-9" });
        restarted.LoadRecord();
        restarted.OfferedFeatures.Should().Be(VirtioFeatureBits.Version1 | VirtioFeatureBits.NetMrgRxbuf | VirtioFeatureBits.ProtocolFeatures | VirtioFeatureBits.LogAll);

        var contradicting = new VhostUserBackend(BigDevice(), new VhostUserBackendOptions
        {
            SocketPath = "/tmp/unused.sock", StateDirectory = stateDir, StateKey = "vm-9", CompatProfile = "type=net,version_1=on,mrg_rxbuf=on,event_idx=on,max_ring=256,queues=2",
        });
        var act = () => contradicting.LoadRecord();
        act.Should().Throw<CompatibilityException>().Which.Message.Should().Contain("event_idx");
    }

    [Fact]
    public async Task A_corrupted_record_is_reported_and_left_in_place()
    {
        string stateDir = Directory.CreateTempSubdirectory("vhostcompat-state-").FullName;
        var store = new AckedStateStore(stateDir);
        string path = store.PathFor("vm-1");
        await File.WriteAllTextAsync(path, "{\"format\":\"vhostcompat-acked-state\",\"version\":1,\"sha256\":\"00\",\"payload\":{\"key\":\"vm-1\"");
        var backend = new VhostUserBackend(new TestDevice(), new VhostUserBackendOptions { SocketPath = "/tmp/unused.sock", StateDirectory = stateDir, StateKey = "vm-1" });
        var act = () => backend.LoadRecord();
        act.Should().Throw<AckedStateCorruptException>();
        File.Exists(path).Should().BeTrue("a damaged record is never silently replaced");
    }
}
