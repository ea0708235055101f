using System.Text.Json;
using VhostCompat.Backend;
using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Tests.Compat;

public class PreflightCheckTests
{
    private static readonly VhostUserBackendOptions Options = new() { SocketPath = "/tmp/x.sock" };

    private static ulong Net(string names) => VirtioFeatures.Parse(VirtioDeviceType.Net, names);

    private static AckedStateRecord Record(string acked, int queues = 2, int ringSize = 256, ushort mtu = 1500, InterfaceProfile? profile = null, ulong protocol = 0x1a009, bool pinned = true)
    {
        var sizes = Enumerable.Range(0, queues).ToDictionary(i => i, _ => ringSize);
        byte[] config = new byte[12];
        config[8] = (byte)(queues / 2);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16LittleEndian(config.AsSpan(10), mtu);
        return new AckedStateRecord("vm-1.net0", VirtioDeviceType.Net, Net(acked), protocol, profile, queues, sizes, config, profilePinned: pinned);
    }

    private static BackendCapabilities Destination(string offered, int queues = 2, int maxRing = 1024, string mtu = "1500", ProfileCatalog? catalog = null) =>
        new(VirtioDeviceType.Net, Net(offered), 0x1a019, queues, maxRing, 12, new Dictionary<string, string> { ["mtu"] = mtu }, catalog);

    [Fact]
    public void Source_acked_host_tso_that_the_destination_does_not_offer_is_incompatible()
    {
        // PROTOCOL.md §7.3: QEMU's virtio_load fails with "Features 0x... unsupported. Allowed features: 0x...".
        var record = Record("csum,host_tso4,host_tso6,mrg_rxbuf,protocol_features,version_1");
        var dst = Destination("csum,mrg_rxbuf,mtu,indirect_desc,event_idx,protocol_features,version_1");
        var result = PreflightCheck.Check(null, record, dst);
        result.Compatible.Should().BeFalse();
        result.ExitCode.Should().Be(1);
        var f = result.Findings.Should().ContainSingle().Which;
        f.Code.Should().Be("features-unsupported");
        f.Features.Should().Equal("host_tso4", "host_tso6");
        f.Message.Should().StartWith("Features 0x140009801 unsupported. Allowed features: 0x170008009").And.Contain("host_tso4, host_tso6");
    }

    [Fact]
    public void A_superset_destination_is_compatible()
    {
        var record = Record("csum,host_tso4,mrg_rxbuf,protocol_features,version_1");
        var result = PreflightCheck.Check(null, record, Destination("csum,host_tso4,host_tso6,mrg_rxbuf,mtu,protocol_features,version_1,packed"));
        result.Compatible.Should().BeTrue();
        result.Findings.Should().BeEmpty();
        result.ToText().Should().Be("compatible\n");
    }

    [Fact]
    public void Log_all_acked_during_migration_is_not_required_on_the_destination()
    {
        var record = Record("mrg_rxbuf,log_all,protocol_features,version_1");
        PreflightCheck.Check(null, record, Destination("mrg_rxbuf,protocol_features,version_1")).Compatible.Should().BeTrue();
    }

    [Fact]
    public void Ring_size_above_the_destination_maximum_is_incompatible()
    {
        var result = PreflightCheck.Check(null, Record("mrg_rxbuf,version_1", ringSize: 1024), Destination("mrg_rxbuf,version_1", maxRing: 256));
        result.Findings.Select(f => f.Code).Should().Equal("ring-size", "ring-size");
        result.Findings[0].Message.Should().Be("queue 0 has 1024 descriptors, the destination accepts at most 256");
    }

    [Fact]
    public void More_queues_than_the_destination_serves_is_incompatible()
    {
        var result = PreflightCheck.Check(null, Record("mrg_rxbuf,mq,version_1", queues: 8), Destination("mrg_rxbuf,mq,version_1", queues: 4));
        result.Compatible.Should().BeFalse();
        result.Findings.Should().Contain(f => f.Code == "queue-count" && f.Message.Contains("8 virtqueues", StringComparison.Ordinal));
        result.Findings.Count(f => f.Code == "queue-count").Should().Be(5, "the total and each of queues 4..7");
    }

    [Fact]
    public void Guest_visible_config_must_be_equal()
    {
        var result = PreflightCheck.Check(null, Record("mtu,mrg_rxbuf,version_1", mtu: 9000), Destination("mtu,mrg_rxbuf,version_1", mtu: "1500"));
        result.Findings.Should().ContainSingle().Which.Message.Should().Be("config field mtu is 9000 on the source and 1500 on the destination");

        // Without the mtu feature the guest never saw the field.
        PreflightCheck.Check(null, Record("mrg_rxbuf,version_1", mtu: 9000), Destination("mtu,mrg_rxbuf,version_1", mtu: "1500")).Compatible.Should().BeTrue();

        // A destination pinned to a profile that fixes the MTU presents the profile's value.
        var pinned = InterfaceProfile.Parse("type=net,mtu=9000,mrg_rxbuf=on,version_1=on");
        PreflightCheck.Check(pinned, Record("mtu,mrg_rxbuf,version_1", mtu: 9000), Destination("mtu,mrg_rxbuf,version_1", mtu: "1500")).Compatible.Should().BeTrue();
    }

    [Fact]
    public void Missing_protocol_features_are_named()
    {
        var record = Record("mrg_rxbuf,version_1", protocol: 0x1a009 | 0x2);
        var f = PreflightCheck.Check(null, record, Destination("mrg_rxbuf,version_1")).Findings.Should().ContainSingle().Which;
        f.Code.Should().Be("protocol-features");
        f.Features.Should().Equal("log_shmfd");
    }

    [Fact]
    public void Profile_only_check_against_a_catalog()
    {
        var catalog = ProfileCatalogTests.NetCatalog();
        var v2 = catalog.Find("org.example.vnet.v2")!;

        // Destination publishes the same v2: compatible.
        PreflightCheck.Check(v2, null, Destination("csum,host_tso4,host_tso6,mrg_rxbuf,indirect_desc,event_idx,mq,version_1,protocol_features", queues: 4, catalog: catalog))
            .Compatible.Should().BeTrue();

        // Older destination build: v2's offloads and limits are missing.
        var old = PreflightCheck.Check(v2, null, Destination("mrg_rxbuf,version_1,protocol_features", queues: 2, maxRing: 256));
        old.Compatible.Should().BeFalse();
        old.Findings.Where(f => f.Severity == PreflightSeverity.Error).Select(f => f.Code).Should().Equal("profile-unsupported", "profile-unsupported", "profile-unsupported");
        old.Findings[0].Features.Should().Equal("csum", "host_tso4", "host_tso6", "mq", "indirect_desc", "event_idx");
        old.Findings.Should().Contain(f => f.Code == "profile-not-in-catalog" && f.Severity == PreflightSeverity.Warning);

        // A destination whose v2 means something else.
        var other = ProfileCatalog.Declare(VirtioDeviceType.Net, "org.example.vnet.v2", ("org.example.vnet.v2", "version_1=on,mrg_rxbuf=on,max_ring=1024,mq=on,queues=4,indirect_desc=on,event_idx=on"));
        var changed = PreflightCheck.Check(v2, null, Destination("csum,host_tso4,host_tso6,mrg_rxbuf,indirect_desc,event_idx,mq,version_1", queues: 4, catalog: other));
        changed.Findings.Should().ContainSingle().Which.Message.Should().Contain("csum on -> off").And.Contain("host_tso4 on -> off");
    }

    [Fact]
    public void A_profile_the_source_only_offered_by_default_does_not_bind_the_destination_what_the_guest_acked_does()
    {
        // The migration matrix's return leg: a VM created on an older build (v1 acked) now runs on an unpinned newer
        // build, whose record names its own latest profile. QEMU migrates it back to the old build: acked ⊆ offered.
        var latest = InterfaceProfile.Parse("type=net,version_1=on,mrg_rxbuf=on,indirect_desc=on,event_idx=on,max_ring=256,queues=2").WithId("org.example.vnet.v2");
        var old = Destination("mrg_rxbuf,protocol_features,version_1");
        var byDefault = PreflightCheck.Check(null, Record("mrg_rxbuf,protocol_features,version_1", profile: latest, pinned: false), old);
        byDefault.Compatible.Should().BeTrue(byDefault.ToText());
        byDefault.Findings.Should().ContainSingle().Which.Code.Should().Be("profile-not-pinned");
        byDefault.Findings[0].Severity.Should().Be(PreflightSeverity.Warning);

        // Had management pinned the VM to that profile, the old build could not honour the pin.
        var pinned = PreflightCheck.Check(null, Record("mrg_rxbuf,protocol_features,version_1", profile: latest, pinned: true), old);
        pinned.Compatible.Should().BeFalse();
        pinned.Findings.Should().Contain(f => f.Code == "profile-unsupported" && f.Features.SequenceEqual(new[] { "indirect_desc", "event_idx" }));

        // Unpinned, what the guest did ack still counts.
        var acked = PreflightCheck.Check(null, Record("mrg_rxbuf,event_idx,protocol_features,version_1", profile: latest, pinned: false), old);
        acked.Findings.Should().Contain(f => f.Code == "features-unsupported" && f.Features.SequenceEqual(new[] { "event_idx" }));

        // A profile the caller names explicitly is always enforced.
        PreflightCheck.Check(latest, Record("mrg_rxbuf,protocol_features,version_1", profile: latest, pinned: false), old).Compatible.Should().BeFalse();
    }

    [Fact]
    public void Unpublished_profile_is_only_a_warning()
    {
        var p = InterfaceProfile.Parse("type=net,mrg_rxbuf=on,version_1=on").WithId("org.example.vnet.custom");
        var result = PreflightCheck.Check(p, null, Destination("mrg_rxbuf,version_1"));
        result.Compatible.Should().BeTrue();
        result.Findings.Should().ContainSingle().Which.Severity.Should().Be(PreflightSeverity.Warning);
        result.ToText().Should().StartWith("compatible\n  warning profile-not-in-catalog: ");
    }

    [Fact]
    public void Device_type_mismatch_stops_the_check()
    {
        var dst = new BackendCapabilities(VirtioDeviceType.Block, 0, 0, 1, 256, 0);
        var result = PreflightCheck.Check(null, Record("mrg_rxbuf"), dst);
        result.Findings.Should().ContainSingle().Which.Code.Should().Be("device-type");
    }

    [Fact]
    public void Needs_a_profile_or_a_record()
    {
        var act = () => PreflightCheck.Check(null, null, Destination("mrg_rxbuf"));
        act.Should().Throw<ArgumentException>();
    }

    [Fact]
    public void Json_output_lists_every_reason()
    {
        var result = PreflightCheck.Check(null, Record("csum,host_tso4,host_tso6,mrg_rxbuf,version_1", ringSize: 1024), Destination("csum,mrg_rxbuf,version_1", maxRing: 512));
        using var doc = JsonDocument.Parse(result.ToJson());
        doc.RootElement.GetProperty("compatible").GetBoolean().Should().BeFalse();
        var findings = doc.RootElement.GetProperty("findings").EnumerateArray().ToList();
        findings.Select(f => f.GetProperty("code").GetString()).Should().Equal("features-unsupported", "ring-size", "ring-size");
        findings[0].GetProperty("features").EnumerateArray().Select(e => e.GetString()).Should().Equal("host_tso4", "host_tso6");
        findings[0].GetProperty("severity").GetString().Should().Be("error");
    }

    [Fact]
    public void Destination_from_a_real_device_document()
    {
        // Source VM negotiated against a build with TSO; the destination build (rendered from a device) lacks it.
        var record = Record("csum,host_tso4,host_tso6,mrg_rxbuf,mtu,protocol_features,version_1");
        var dstDevice = new TestNetDevice(Net("csum,mrg_rxbuf,mtu,version_1"));
        string caps = CapabilityDocument.Render(dstDevice, Options);
        var dst = CapabilityDocument.Parse(System.Text.Encoding.UTF8.GetBytes(caps), "dst.json");
        var result = PreflightCheck.Check(null, record, dst);
        result.Findings.Should().ContainSingle().Which.Features.Should().Equal("host_tso4", "host_tso6");
    }
}
