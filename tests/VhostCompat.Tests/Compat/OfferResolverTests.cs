using VhostCompat.Compat;

namespace VhostCompat.Tests.Compat;

/// <summary>The one resolver of what a backend offers (Compat.OfferResolver) and the one computation for SDK devices (DeviceOffer).</summary>
public sealed class OfferResolverTests
{
    private const ulong NetBits = VirtioFeatureBits.Version1 | VirtioFeatureBits.NetMrgRxbuf | VirtioFeatureBits.NetMtu | VirtioFeatureBits.ProtocolFeatures;

    private static BackendCapabilities ProbedNet(ushort mtu = 1500) =>
        new(VirtioDeviceType.Net, NetBits, (ulong)(VhostUserProtocolFeatures.Mq | VhostUserProtocolFeatures.Mtu), 2, 1024, 12,
            new Dictionary<string, string> { ["mtu"] = mtu.ToString(System.Globalization.CultureInfo.InvariantCulture) });

    [Fact]
    public void Without_pin_or_record_the_capability_is_the_offer()
    {
        var resolved = OfferResolver.Resolve(ProbedNet(), [], null, null, null, catalogLatestByDefault: false);
        resolved.Servable.Should().BeTrue();
        resolved.Pin.Should().BeNull();
        resolved.Offer.VirtioFeatures.Should().Be(NetBits);
    }

    [Fact]
    public void A_pinned_config_field_is_written_over_decoded_fields_when_no_config_bytes_are_known()
    {
        var resolved = OfferResolver.Resolve(ProbedNet(mtu: 1500), [], null, "type=net,version_1=on,mtu=9000", null, catalogLatestByDefault: false);
        resolved.Servable.Should().BeTrue();
        resolved.Offer.Config["mtu"].Should().Be("9000", "the proxy's GET_CONFIG answers carry the pinned MTU, so the capability document must too");
        resolved.Offer.VirtioFeatures.Should().Be(VirtioFeatureBits.Version1 | VirtioFeatureBits.NetMtu | VirtioFeatureBits.ProtocolFeatures);
    }

    [Fact]
    public void Block_capacity_and_block_size_are_overlaid_too()
    {
        var blk = new BackendCapabilities(VirtioDeviceType.Block, VirtioFeatureBits.Version1 | (1UL << 6) /* blk_size */, 0, 1, 256, 60,
            new Dictionary<string, string> { ["capacity"] = "2048", ["blk_size"] = "512" });
        var resolved = OfferResolver.Resolve(blk, [], null, "type=block,version_1=on,blk_size=4096,capacity=4096", null, catalogLatestByDefault: false);
        resolved.Problems.Should().BeEmpty();
        resolved.Offer.Config["capacity"].Should().Be("4096");
        resolved.Offer.Config["blk_size"].Should().Be("4096");
    }

    [Fact]
    public void A_pin_asking_for_more_than_the_backend_lists_every_problem()
    {
        var resolved = OfferResolver.Resolve(ProbedNet(), [], null, "type=net,version_1=on,event_idx=on,mq=on,queues=4,max_ring=2048", null, catalogLatestByDefault: false);
        resolved.Servable.Should().BeFalse();
        resolved.Problems.Should().HaveCount(3);
        resolved.Problems.Should().Contain(p => p.Contains("event_idx", StringComparison.Ordinal))
            .And.Contain(p => p.Contains("max_ring 2048", StringComparison.Ordinal))
            .And.Contain(p => p.Contains("queues 4", StringComparison.Ordinal));
    }

    [Fact]
    public void A_record_of_another_device_type_is_refused()
    {
        var record = new AckedStateRecord("vm-1", VirtioDeviceType.Block, VirtioFeatureBits.Version1, 0, null, 1, new Dictionary<int, int> { [0] = 128 }, []);
        var resolved = OfferResolver.Resolve(ProbedNet(), [], null, null, record, catalogLatestByDefault: false);
        resolved.Problems.Should().ContainSingle().Which.Should().Contain("is for a block device");
    }

    [Fact]
    public void The_SDK_offer_adds_device_state_only_with_state_and_the_pin_can_take_it_away()
    {
        var withState = new DeviceDescription(VirtioDeviceType.Net, VirtioFeatureBits.Version1, VhostUserProtocolFeatures.None, 2, 1, 256, [], 3, [2, 3], null);
        var slots = new MemorySlotOffer(true, 32);
        var offer = DeviceOffer.For(withState, slots, null, null);
        ((VhostUserProtocolFeatures)offer.ProtocolFeatures).Should().HaveFlag(VhostUserProtocolFeatures.DeviceState).And.HaveFlag(VhostUserProtocolFeatures.ConfigureMemSlots);
        offer.DeviceStateVersions.Should().Equal(2u, 3u);
        offer.MaxMemorySlots.Should().Be(32);
        offer.VirtioFeatures.Should().Be(VirtioFeatureBits.Version1 | VirtioFeatureBits.ProtocolFeatures | VirtioFeatureBits.LogAll);

        var off = ProfilePin.Create(withState, InterfaceProfile.Parse("type=net,version_1=on,device_state=off"));
        var pinned = DeviceOffer.For(withState, slots, off, null);
        ((VhostUserProtocolFeatures)pinned.ProtocolFeatures).Should().NotHaveFlag(VhostUserProtocolFeatures.DeviceState);
        pinned.DeviceStateVersions.Should().BeEmpty();
        pinned.Queues.Should().Be(2);
    }
}
