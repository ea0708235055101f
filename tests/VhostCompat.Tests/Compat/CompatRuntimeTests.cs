using VhostCompat.Backend;
using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Tests.Compat;

public sealed class CompatRuntimeTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vhc-rt").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly VhostUserBackendOptions Options = new() { SocketPath = "/run/vm1/vnet.sock" };

    private static TestNetDevice Big() => new(TestNetDevice.Parse("version_1,mrg_rxbuf,indirect_desc,event_idx,csum,host_tso4,host_tso6,mq,mtu"), queues: 8);

    private static readonly Dictionary<int, int> Rings = new() { [0] = 256, [1] = 256 };

    [Fact]
    public void Without_pin_catalog_or_store_the_device_is_served_as_is()
    {
        var rt = CompatRuntime.Create(Big(), Options, null, null, null, null);
        rt.Pin.Should().BeNull();
        rt.OfferedFeatures(0x1234).Should().Be(0x1234);
        rt.QueueCount.Should().Be(8);
        rt.MaxRingSize.Should().Be(1024);
        rt.Key.Should().Be(AckedStateStore.DefaultKey("/run/vm1/vnet.sock"));
        rt.SaveNegotiated(1, 1, Rings, []).Should().BeNull();
    }

    [Fact]
    public void Catalog_latest_is_offered_unless_pinned()
    {
        CompatRuntime.Create(Big(), Options, ProfileCatalogTests.NetCatalog(), null, null, null).Pin!.Profile.Id.Should().Be("org.example.vnet.v2");
        var rt = CompatRuntime.Create(Big(), Options, ProfileCatalogTests.NetCatalog(), "org.example.vnet.v1", null, null);
        rt.QueueNumReply.Should().Be(1);
        rt.MaxRingSize.Should().Be(256);
    }

    [Fact]
    public void A_restart_reoffers_the_recorded_profile_and_saves_only_changes()
    {
        var first = CompatRuntime.Create(Big(), Options, ProfileCatalogTests.NetCatalog(), "org.example.vnet.v1", _dir, "vm1.net0");
        ulong acked = first.OfferedFeatures(Big().DeviceFeatures | VirtioFeatureBits.ProtocolFeatures);
        first.SaveNegotiated(acked, 0x1a009, Rings, new byte[12])!.Generation.Should().Be(1);
        first.SaveNegotiated(acked, 0x1a009, Rings, new byte[12])!.Generation.Should().Be(1, "nothing changed");

        // Restart without --compat-profile: the guest keeps v1 although v2 is the latest.
        var second = CompatRuntime.Create(Big(), Options, ProfileCatalogTests.NetCatalog(), null, _dir, "vm1.net0");
        second.Pin!.Profile.Id.Should().Be("org.example.vnet.v1");
        second.Record!.AckedFeatures.Should().Be(acked);
        second.SaveNegotiated(acked, 0x1a009, new Dictionary<int, int> { [0] = 128, [1] = 256 }, new byte[12])!.Generation.Should().Be(2);
    }

    [Fact]
    public void A_pin_that_contradicts_the_record_is_refused_naming_the_keys()
    {
        var first = CompatRuntime.Create(Big(), Options, ProfileCatalogTests.NetCatalog(), "org.example.vnet.v1", _dir, "vm1.net0");
        first.SaveNegotiated(VirtioFeatureBits.Version1 | VirtioFeatureBits.NetMrgRxbuf, 0x1a009, Rings, []);
        var act = () => CompatRuntime.Create(Big(), Options, ProfileCatalogTests.NetCatalog(), "org.example.vnet.v2", _dir, "vm1.net0");
        act.Should().Throw<CompatibilityException>().Which.Problems.Should().Contain("max_ring: recorded 256, pinned 1024");
    }

    [Fact]
    public void A_downgrade_fails_fast_with_the_missing_bits_named()
    {
        var upgraded = CompatRuntime.Create(Big(), Options, null, null, _dir, "vm1.net0");
        upgraded.SaveNegotiated(TestNetDevice.Parse("csum,host_tso4,host_tso6,mrg_rxbuf,version_1,protocol_features"), 0x1a009, Rings, []);

        var older = new TestNetDevice(TestNetDevice.Parse("version_1,mrg_rxbuf,csum,mq"), queues: 8);
        var act = () => CompatRuntime.Create(older, Options, null, null, _dir, "vm1.net0");
        act.Should().Throw<CompatibilityException>().WithMessage("*cannot honour*vm1.net0.json*")
            .Which.Problems.Should().ContainSingle().Which.Should().Contain("host_tso4, host_tso6");
    }

    [Fact]
    public void A_pin_beyond_the_build_and_a_damaged_record_are_reported()
    {
        var small = new TestNetDevice(TestNetDevice.Parse("version_1,mrg_rxbuf"), queues: 2, maxQueueSize: 256);
        var act = () => CompatRuntime.Create(small, Options, null, "mrg_rxbuf=on,max_ring=1024", null, null);
        act.Should().Throw<CompatibilityException>().Which.Problems.Should().ContainSingle().Which.Should().Contain("max_ring 1024");

        File.WriteAllText(Path.Combine(_dir, "vm1.net0.json"), "garbage");
        var load = () => CompatRuntime.Create(small, Options, null, null, _dir, "vm1.net0");
        load.Should().Throw<AckedStateCorruptException>();
    }
}
