using VhostCompat.Virtio;

namespace VhostCompat.Tests.Virtio;

public class VirtioFeaturesTests
{
    [Theory]
    [InlineData(VirtioDeviceType.Net, "csum", 0)]
    [InlineData(VirtioDeviceType.Net, "mtu", 3)]
    [InlineData(VirtioDeviceType.Net, "mrg_rxbuf", 15)]
    [InlineData(VirtioDeviceType.Net, "mq", 22)]
    [InlineData(VirtioDeviceType.Net, "ctrl_mac_addr", 23)]
    [InlineData(VirtioDeviceType.Net, "rss", 60)]
    [InlineData(VirtioDeviceType.Net, "speed_duplex", 63)]
    [InlineData(VirtioDeviceType.Block, "mq", 12)]
    [InlineData(VirtioDeviceType.Block, "flush", 9)]
    [InlineData(VirtioDeviceType.Block, "write_zeroes", 14)]
    [InlineData(VirtioDeviceType.Rng, "version_1", 32)]
    [InlineData(VirtioDeviceType.Rng, "indirect_desc", 28)]
    [InlineData(VirtioDeviceType.Net, "event_idx", 29)]
    [InlineData(VirtioDeviceType.Net, "iommu_platform", 33)]
    [InlineData(VirtioDeviceType.Net, "packed", 34)]
    [InlineData(VirtioDeviceType.Net, "in_order", 35)]
    [InlineData(VirtioDeviceType.Net, "queue_reset", 40)]
    public void Names_map_to_the_spec_bits_both_ways(VirtioDeviceType type, string name, int bit)
    {
        VirtioFeatures.Find(type, name)!.Bit.Should().Be(bit);
        VirtioFeatures.NameOf(type, bit).Should().Be(name);
    }

    [Fact]
    public void Same_bit_has_a_different_name_per_device_type()
    {
        VirtioFeatures.NameOf(VirtioDeviceType.Net, 12).Should().Be("host_tso6");
        VirtioFeatures.NameOf(VirtioDeviceType.Block, 12).Should().Be("mq");
        VirtioFeatures.NameOf(VirtioDeviceType.Rng, 12).Should().Be("bit12");
        VirtioFeatures.Find(VirtioDeviceType.Block, "mrg_rxbuf").Should().BeNull();
    }

    [Fact]
    public void Every_table_has_unique_bits_and_names_and_matches_the_existing_masks()
    {
        foreach (var type in new[] { VirtioDeviceType.Net, VirtioDeviceType.Block, VirtioDeviceType.Rng, VirtioDeviceType.Console })
        {
            var known = VirtioFeatures.Known(type);
            known.Select(f => f.Bit).Should().OnlyHaveUniqueItems().And.BeInAscendingOrder();
            known.Select(f => f.Name).Should().OnlyHaveUniqueItems();
            known.Should().OnlyContain(f => f.Name.All(c => char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c) || c == '_'));
        }

        VirtioFeatures.Parse(VirtioDeviceType.Net, "version_1,mrg_rxbuf,mq,mac,mtu,guest_announce,indirect_desc,event_idx,any_layout,notify_on_empty,packed,in_order,iommu_platform")
            .Should().Be(VirtioFeatureBits.Version1 | VirtioFeatureBits.NetMrgRxbuf | VirtioFeatureBits.NetMq | VirtioFeatureBits.NetMac
                | VirtioFeatureBits.NetMtu | VirtioFeatureBits.NetGuestAnnounce | VirtioFeatureBits.IndirectDesc | VirtioFeatureBits.EventIdx
                | VirtioFeatureBits.AnyLayout | VirtioFeatureBits.NotifyOnEmpty | VirtioFeatureBits.RingPacked | VirtioFeatureBits.InOrder
                | VirtioFeatureBits.AccessPlatform);
        VirtioFeatures.Find(VirtioDeviceType.Net, "log_all")!.IsVhostOnly.Should().BeTrue();
        VirtioFeatures.Find(VirtioDeviceType.Net, "protocol_features")!.IsVhostOnly.Should().BeTrue();
        VirtioFeatures.Find(VirtioDeviceType.Net, "version_1")!.IsVhostOnly.Should().BeFalse();
    }

    [Fact]
    public void Format_is_ascending_by_bit_and_names_unknown_bits()
    {
        ulong f = VirtioFeatureBits.Version1 | VirtioFeatureBits.NetMrgRxbuf | (1UL << 45) | 1;
        VirtioFeatures.Format(VirtioDeviceType.Net, f).Should().Be("csum,mrg_rxbuf,version_1,bit45");
        VirtioFeatures.Parse(VirtioDeviceType.Net, "csum,mrg_rxbuf,version_1,bit45").Should().Be(f);
        VirtioFeatures.Format(VirtioDeviceType.Net, 0).Should().BeEmpty();
        VirtioFeatures.Parse(VirtioDeviceType.Net, " ").Should().Be(0);
    }

    [Fact]
    public void The_qemu_acked_set_of_the_sample_decodes_to_names()
    {
        // docs/protocol.md: QEMU 7.2 acked 0x170008000 against samples/Net.
        VirtioFeatures.Format(VirtioDeviceType.Net, 0x170008000).Should().Be("mrg_rxbuf,indirect_desc,event_idx,protocol_features,version_1");
    }

    [Fact]
    public void Aliases_are_accepted_and_canonicalised()
    {
        ulong f = VirtioFeatures.Parse(VirtioDeviceType.Net, "access_platform,ring_packed,ring_reset,standby");
        VirtioFeatures.Format(VirtioDeviceType.Net, f).Should().Be("iommu_platform,packed,queue_reset,failover");
    }

    [Theory]
    [InlineData("mrg_rxbuf,bogus", "bogus")]
    [InlineData("mrg_rxbuf,,csum", "empty item")]
    [InlineData("csum,csum", "given twice")]
    [InlineData("bit64", "bit64")]
    [InlineData("bit007", "bit007")]
    [InlineData("MRG_RXBUF", "MRG_RXBUF")]
    public void Parse_is_strict_and_names_the_bad_item(string text, string expected)
    {
        var act = () => VirtioFeatures.Parse(VirtioDeviceType.Net, text);
        act.Should().Throw<FormatException>().WithMessage($"*{expected}*");
        VirtioFeatures.TryParse(VirtioDeviceType.Net, text, out _, out string? error).Should().BeFalse();
        error.Should().Contain(expected);
    }

    [Theory]
    [InlineData("guest_tso4", "guest_tso4 requires guest_csum")]
    [InlineData("guest_tso6", "guest_tso6 requires guest_csum")]
    [InlineData("guest_ufo", "guest_ufo requires guest_csum")]
    [InlineData("host_tso4", "host_tso4 requires csum")]
    [InlineData("host_tso6", "host_tso6 requires csum")]
    [InlineData("host_ufo", "host_ufo requires csum")]
    [InlineData("guest_csum,guest_ecn", "guest_ecn requires guest_tso4 or guest_tso6")]
    [InlineData("csum,host_ecn", "host_ecn requires host_tso4 or host_tso6")]
    [InlineData("ctrl_rx", "ctrl_rx requires ctrl_vq")]
    [InlineData("ctrl_vlan", "ctrl_vlan requires ctrl_vq")]
    [InlineData("guest_announce", "guest_announce requires ctrl_vq")]
    [InlineData("mq", "mq requires ctrl_vq")]
    [InlineData("ctrl_mac_addr", "ctrl_mac_addr requires ctrl_vq")]
    [InlineData("ctrl_guest_offloads", "ctrl_guest_offloads requires ctrl_vq")]
    [InlineData("ctrl_vq,ctrl_rx_extra", "ctrl_rx_extra requires ctrl_rx")]
    [InlineData("rss", "rss requires ctrl_vq")]
    [InlineData("hash_report", "hash_report requires ctrl_vq")]
    [InlineData("csum,rsc_ext", "rsc_ext requires host_tso4 or host_tso6")]
    public void Net_dependency_rules_name_both_features(string set, string message)
    {
        var violations = VirtioFeatures.CheckDependencies(VirtioDeviceType.Net, VirtioFeatures.Parse(VirtioDeviceType.Net, set));
        violations.Should().ContainSingle().Which.Message.Should().Be(message);
    }

    [Fact]
    public void Checker_returns_every_violation()
    {
        var v = VirtioFeatures.CheckDependencies(VirtioDeviceType.Net, VirtioFeatures.Parse(VirtioDeviceType.Net, "guest_tso4,host_tso4,mq"));
        v.Select(x => x.Message).Should().Equal("guest_tso4 requires guest_csum", "host_tso4 requires csum", "mq requires ctrl_vq");
        v[0].Feature.Should().Be("guest_tso4");
        v[0].RequiresAnyOf.Should().Equal("guest_csum");
    }

    [Fact]
    public void Consistent_sets_pass()
    {
        VirtioFeatures.CheckDependencies(VirtioDeviceType.Net,
            VirtioFeatures.Parse(VirtioDeviceType.Net, "csum,guest_csum,guest_tso4,guest_tso6,guest_ecn,host_tso4,host_ecn,ctrl_vq,ctrl_rx,ctrl_rx_extra,mq,rss,version_1"))
            .Should().BeEmpty();
        VirtioFeatures.CheckDependencies(VirtioDeviceType.Block, ulong.MaxValue).Should().BeEmpty();
    }

    [Fact]
    public void Backend_scope_treats_frontend_emulated_net_features_as_present()
    {
        // QEMU emulates the control queue: a vhost-user-net backend offers mq without ctrl_vq (samples/Net does).
        ulong offer = VirtioFeatures.Parse(VirtioDeviceType.Net, "mrg_rxbuf,mq,guest_announce,version_1");
        VirtioFeatures.CheckDependencies(VirtioDeviceType.Net, offer, FeatureCheckScope.Backend).Should().BeEmpty();
        VirtioFeatures.CheckDependencies(VirtioDeviceType.Net, offer, FeatureCheckScope.Guest).Should().HaveCount(2);

        // DPDK's vhost PMD offers host_ecn without host_tso4/6 (tso=0, its default); QEMU passes it to the guest.
        ulong dpdk = VirtioFeatures.Parse(VirtioDeviceType.Net, "csum,host_ecn,host_ufo,version_1");
        VirtioFeatures.CheckDependencies(VirtioDeviceType.Net, dpdk, FeatureCheckScope.Backend).Should().BeEmpty();
        VirtioFeatures.CheckDependencies(VirtioDeviceType.Net, dpdk, FeatureCheckScope.Guest)
            .Should().ContainSingle().Which.Message.Should().Be("host_ecn requires host_tso4 or host_tso6");

        // Offload rules still apply: csum is the backend's.
        VirtioFeatures.CheckDependencies(VirtioDeviceType.Net, VirtioFeatures.Parse(VirtioDeviceType.Net, "host_tso4"), FeatureCheckScope.Backend)
            .Should().ContainSingle().Which.Message.Should().Be("host_tso4 requires csum");
    }
}
