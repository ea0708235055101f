using CsCheck;
using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Tests.Compat;

public class InterfaceProfileTests
{
    [Fact]
    public void Design_example_parses_with_defaults_for_unspecified_keys()
    {
        var p = InterfaceProfile.Parse("any_layout=on,max_ring=256,mrg_rxbuf=off", VirtioDeviceType.Net);
        p.Features.Should().Be(VirtioFeatureBits.AnyLayout);
        p.MaxRingSize.Should().Be(256);
        p.Queues.Should().Be(2);
        p.QueueNumReply.Should().Be(1);
        p.Id.Should().BeNull();
        p.Canonical.Should().StartWith("type=net,admin_vq=off,any_layout=on,");
        p.Canonical.Should().Contain(",max_ring=256,").And.Contain(",mrg_rxbuf=off,").And.Contain(",queues=2,");
    }

    [Fact]
    public void Canonical_form_lists_every_key_once_in_stable_order()
    {
        var p = InterfaceProfile.Parse("type=net,version_1=on,mrg_rxbuf=on,mq=on,queues=8,max_ring=1024,mtu=9000");
        var keys = p.Values().Select(kv => kv.Key).ToList();
        keys[0].Should().Be("type");
        keys.Skip(1).Should().BeInAscendingOrder(StringComparer.Ordinal).And.OnlyHaveUniqueItems();
        keys.Should().NotContain(["log_all", "protocol_features", "capacity"]);
        keys.Should().HaveCount(1 + VirtioFeatures.Known(VirtioDeviceType.Net).Count(f => !f.IsVhostOnly) + 2);
        p.Canonical.Should().Contain("mtu=9000").And.Contain("mq=on").And.Contain("queues=8");
        p.Mtu.Should().Be(9000);
        p.QueueNumReply.Should().Be(4);
    }

    [Fact]
    public void Different_spellings_of_the_same_profile_have_the_same_canonical_string()
    {
        var a = InterfaceProfile.Parse("type=net, mrg_rxbuf=on ,version_1=on,iommu_platform=off");
        var b = InterfaceProfile.Parse("version_1=on,max_ring=256,mrg_rxbuf=on,csum=off", VirtioDeviceType.Net);
        a.Canonical.Should().Be(b.Canonical);
        a.Should().Be(b);
        a.GetHashCode().Should().Be(b.GetHashCode());
        InterfaceProfile.Parse(a.Canonical).Should().Be(a);
    }

    [Theory]
    [InlineData("type=net,bogus=on", "bogus")]
    [InlineData("type=net,mrg_rxbuf=on,mrg_rxbuf=off", "mrg_rxbuf")]
    [InlineData("type=net,access_platform=on,iommu_platform=on", "iommu_platform")]
    [InlineData("type=net,mrg_rxbuf=yes", "mrg_rxbuf")]
    [InlineData("type=net,max_ring=300", "max_ring")]
    [InlineData("type=net,max_ring=65536", "max_ring")]
    [InlineData("type=net,max_ring=0256", "max_ring")]
    [InlineData("type=net,max_ring=-1", "max_ring")]
    [InlineData("type=net,queues=3,mq=on", "queues")]
    [InlineData("type=net,queues=4", "queues")]
    [InlineData("type=block,queues=2", "queues")]
    [InlineData("type=rng,queues=2", "queues")]
    [InlineData("type=net,host_tso4=on", "host_tso4")]
    [InlineData("type=net,guest_ecn=on,guest_csum=on", "guest_ecn")]
    [InlineData("type=net,mtu=67", "mtu")]
    [InlineData("type=net,mtu=99999999999999999999999", "mtu")]
    [InlineData("type=net,log_all=on", "log_all")]
    [InlineData("type=net,protocol_features=on", "protocol_features")]
    [InlineData("type=net,capacity=5", "capacity")]
    [InlineData("type=block,blk_size=1000", "blk_size")]
    [InlineData("type=wifi", "type")]
    [InlineData("mrg_rxbuf=on", "type")]
    [InlineData("type=net,type=net", "type")]
    [InlineData("type=net,mrg_rxbuf", "mrg_rxbuf")]
    public void Strict_parsing_names_the_key(string text, string key)
    {
        var act = () => InterfaceProfile.Parse(text);
        act.Should().Throw<ProfileFormatException>().Which.Key.Should().Be(key);
        InterfaceProfile.TryParse(text, null, out var p, out var error).Should().BeFalse();
        p.Should().BeNull();
        error!.Message.Should().Contain(key);
    }

    [Fact]
    public void Type_must_agree_with_the_device()
    {
        var act = () => InterfaceProfile.Parse("type=block,flush=on", VirtioDeviceType.Net);
        act.Should().Throw<ProfileFormatException>().Which.Key.Should().Be("type");
    }

    [Fact]
    public void Empty_items_are_rejected()
    {
        var act = () => InterfaceProfile.Parse("type=net,,mrg_rxbuf=on");
        act.Should().Throw<ProfileFormatException>().WithMessage("*empty item*");
    }

    [Fact]
    public void Backend_profiles_may_offer_mq_without_ctrl_vq()
    {
        var p = InterfaceProfile.Parse("type=net,mq=on,queues=4,guest_announce=on,version_1=on");
        p.Queues.Should().Be(4);
    }

    [Fact]
    public void Block_profile_carries_block_size_and_capacity()
    {
        var p = InterfaceProfile.Parse("type=block,blk_size=4096,capacity=2097152,flush=on,mq=on,queues=4,version_1=on");
        p.BlockSize.Should().Be(4096);
        p.Capacity.Should().Be(2097152);
        p.Canonical.Should().Contain("blk_size=4096").And.Contain("capacity=2097152").And.StartWith("type=block,");
        InterfaceProfile.Parse(p.Canonical).Should().Be(p);
        InterfaceProfile.Parse("type=block,blk_size=on").BlockSize.Should().BeNull();
    }

    [Theory]
    [InlineData("org.example.vnet.v2", true)]
    [InlineData("com.acme.blk-1_0.v10", true)]
    [InlineData("vnet", false)]
    [InlineData("Org.example.v1", false)]
    [InlineData("org..v1", false)]
    [InlineData(".org.v1", false)]
    [InlineData("org.example.v1=", false)]
    [InlineData("", false)]
    public void Id_syntax(string id, bool valid) => InterfaceProfile.IsValidId(id).Should().Be(valid);

    [Fact]
    public void WithId_rejects_bad_ids_and_equality_includes_the_id()
    {
        var p = InterfaceProfile.Parse("type=rng,version_1=on");
        var act = () => p.WithId("not an id");
        act.Should().Throw<ProfileFormatException>().Which.Key.Should().Be("id");
        p.WithId("org.example.rng.v1").Should().NotBe(p);
        p.WithId("org.example.rng.v1").SameInterface(p).Should().BeTrue();
        p.WithId("org.example.rng.v1").ToString().Should().Be("org.example.rng.v1");
    }

    [Fact]
    public void Diff_lists_changed_keys()
    {
        var a = InterfaceProfile.Parse("type=net,mrg_rxbuf=on,max_ring=256");
        var b = InterfaceProfile.Parse("type=net,mrg_rxbuf=off,max_ring=1024,event_idx=on");
        a.Diff(b).Should().Equal(("event_idx", "off", "on"), ("max_ring", "256", "1024"), ("mrg_rxbuf", "on", "off"));
        a.Diff(a).Should().BeEmpty();
    }

    [Fact]
    public void CheckSupportedBy_names_missing_bits_and_limits()
    {
        var p = InterfaceProfile.Parse("type=net,csum=on,host_tso4=on,host_tso6=on,mrg_rxbuf=on,max_ring=1024,mq=on,queues=4");
        var problems = p.CheckSupportedBy(VirtioFeatureBits.NetMrgRxbuf | VirtioFeatureBits.NetMq | 1, 2, 256);
        problems.Should().HaveCount(3);
        problems[0].Should().Contain("host_tso4,host_tso6");
        problems[1].Should().Contain("max_ring 1024");
        problems[2].Should().Contain("queues 4");
    }

    private static readonly ulong[] NetKeys = [.. VirtioFeatures.Known(VirtioDeviceType.Net).Where(f => !f.IsVhostOnly).Select(f => f.Mask)];

    private static readonly Gen<InterfaceProfile> GenNetProfile =
        Gen.Select(Gen.ULong, Gen.Int[0, 15], Gen.Int[1, 127], Gen.Bool, Gen.Int[68, 65535])
            .Select((bits, ringExp, pairs, withMtu, mtu) =>
            {
                ulong f = 0;
                foreach (ulong m in NetKeys)
                {
                    f |= bits & m;
                }

                // Repair the dependency rules so every generated set is valid (backend scope).
                while (VirtioFeatures.CheckDependencies(VirtioDeviceType.Net, f, FeatureCheckScope.Backend) is { Count: > 0 } v)
                {
                    f &= ~VirtioFeatures.Find(VirtioDeviceType.Net, v[0].Feature)!.Mask;
                }

                bool mq = (f & VirtioFeatureBits.NetMq) != 0;
                bool hasMtu = (f & VirtioFeatureBits.NetMtu) != 0;
                return new InterfaceProfile(VirtioDeviceType.Net, f, (ushort)(1 << ringExp), mq ? 2 * pairs : 2, null,
                    hasMtu && withMtu ? (ushort)mtu : null);
            });

    [Fact]
    public void Canonical_form_round_trips()
    {
        GenNetProfile.Sample(p =>
        {
            var back = InterfaceProfile.Parse(p.Canonical);
            back.Should().Be(p);
            back.Canonical.Should().Be(p.Canonical);
        }, iter: 1000);
    }

    [Fact]
    public void Value_lists_in_any_order_give_the_same_canonical_form()
    {
        Gen.Select(GenNetProfile, Gen.Int).Sample((p, seed) =>
        {
            var items = p.Values().Skip(1).ToList();
            var rnd = new Random(seed);
            var shuffled = items.OrderBy(_ => rnd.Next()).Where(kv => kv.Value != "off" || rnd.Next(2) == 0);
            string text = string.Join(",", shuffled.Select(kv => $"{kv.Key}={kv.Value}"));
            InterfaceProfile.Parse(text, VirtioDeviceType.Net).Canonical.Should().Be(p.Canonical);
        }, iter: 500);
    }
}
