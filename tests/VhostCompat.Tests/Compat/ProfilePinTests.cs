using System.Buffers.Binary;
using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Tests.Compat;

public class ProfilePinTests
{
    private static readonly TestNetDevice Device =
        new(TestNetDevice.Parse("version_1,mrg_rxbuf,indirect_desc,event_idx,csum,host_tso4,host_tso6,mq,mtu"), queues: 8, mtu: 1500);

    [Fact]
    public void Without_pin_or_catalog_nothing_is_pinned_and_without_pin_the_latest_is()
    {
        ProfilePin.Resolve(Device, null, null).Should().BeNull();
        ProfilePin.Resolve(Device, ProfileCatalogTests.NetCatalog(), null)!.Profile.Id.Should().Be("org.example.vnet.v2");
    }

    [Fact]
    public void Pin_by_id_restricts_features_queues_and_ring_size()
    {
        var pin = ProfilePin.Resolve(Device, ProfileCatalogTests.NetCatalog(), "org.example.vnet.v1")!;
        ulong buildOffer = Device.DeviceFeatures | VirtioFeatureBits.ProtocolFeatures | VirtioFeatureBits.LogAll;
        pin.OfferedFeatures(buildOffer).Should().Be(VirtioFeatureBits.Version1 | VirtioFeatureBits.NetMrgRxbuf | VirtioFeatureBits.ProtocolFeatures | VirtioFeatureBits.LogAll);
        pin.QueueCount.Should().Be(2);
        pin.QueueNumReply.Should().Be(1);
        pin.MaxRingSize.Should().Be(256);
    }

    [Fact]
    public void Pin_by_value_list_works_with_or_without_a_catalog()
    {
        ProfilePin.Resolve(Device, null, "mrg_rxbuf=on,mtu=9000,mq=on,queues=4")!.Profile.Mtu.Should().Be(9000);
        ProfilePin.Resolve(Device, ProfileCatalogTests.NetCatalog(), "version_1=on,mrg_rxbuf=on")!.Profile.Id.Should().Be("org.example.vnet.v1");
        var act = () => ProfilePin.Resolve(Device, null, "org.example.vnet.v1");
        act.Should().Throw<ProfileFormatException>().WithMessage("*no catalog*");
    }

    [Fact]
    public void A_profile_beyond_the_device_is_refused_with_every_problem()
    {
        var small = new TestNetDevice(TestNetDevice.Parse("version_1,mrg_rxbuf"), queues: 2, maxQueueSize: 512);
        var act = () => ProfilePin.Resolve(small, ProfileCatalogTests.NetCatalog(), "org.example.vnet.v2");
        act.Should().Throw<ProfileFormatException>().WithMessage("*cannot offer profile org.example.vnet.v2*csum*max_ring 1024*queues 4*");
        var wrongType = () => ProfilePin.Create(small, InterfaceProfile.Parse("type=rng"));
        wrongType.Should().Throw<ProfileFormatException>().Which.Key.Should().Be("type");
    }

    [Fact]
    public void Config_is_patched_in_any_window()
    {
        var pin = ProfilePin.Resolve(Device, null, "mrg_rxbuf=on,mtu=9000,mq=on,queues=4")!;
        byte[] full = new byte[12];
        Device.ReadConfig(0, full);
        pin.PatchConfig(0, full);
        BinaryPrimitives.ReadUInt16LittleEndian(full.AsSpan(8)).Should().Be(2);
        BinaryPrimitives.ReadUInt16LittleEndian(full.AsSpan(10)).Should().Be(9000);

        // GET_CONFIG of bytes 9..10: the high byte of max_virtqueue_pairs and the low byte of mtu.
        byte[] window = new byte[2];
        Device.ReadConfig(9, window);
        pin.PatchConfig(9, window);
        window.Should().Equal(full[9], full[10]);
    }

    [Fact]
    public void Block_config_fields_follow_the_profile()
    {
        var dev = new TestBlockDevice(VirtioFeatures.Parse(VirtioDeviceType.Block, "blk_size,flush,mq,version_1"), capacity: 2048, blockSize: 512);
        var pin = ProfilePin.Resolve(dev, null, "blk_size=4096,capacity=100,mq=on,queues=2,flush=on")!;
        byte[] config = new byte[60];
        dev.ReadConfig(0, config);
        pin.PatchConfig(0, config);
        BinaryPrimitives.ReadUInt64LittleEndian(config).Should().Be(100);
        BinaryPrimitives.ReadUInt32LittleEndian(config.AsSpan(20)).Should().Be(4096);
        BinaryPrimitives.ReadUInt16LittleEndian(config.AsSpan(34)).Should().Be(2);
    }
}
