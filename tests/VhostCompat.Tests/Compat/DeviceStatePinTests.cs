using VhostCompat.Backend;
using VhostCompat.Compat;
using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.Tests.Compat;

/// <summary>
/// The <c>device_state</c> profile key (DEVICE_STATE pinned off or on) and the preflight rule for what a frontend
/// puts into the migration stream once DEVICE_STATE is acked (QEMU 10.0 → 7.2 fails to load it).
/// </summary>
public class DeviceStatePinTests
{
    private const ulong DeviceStateBit = (ulong)VhostUserProtocolFeatures.DeviceState;

    private static readonly VhostUserBackendOptions Options = new() { SocketPath = "/tmp/x.sock" };

    private static ulong Net(string names) => VirtioFeatures.Parse(VirtioDeviceType.Net, names);

    [Theory]
    [InlineData("device_state=off", false)]
    [InlineData("device_state=on", true)]
    [InlineData("mrg_rxbuf=on", null)]
    public void The_key_parses_and_appears_in_the_canonical_list_only_when_pinned(string values, bool? expected)
    {
        var p = InterfaceProfile.Parse("type=net,version_1=on," + values);
        p.DeviceState.Should().Be(expected);
        if (expected is { } e)
        {
            p.Canonical.Should().Contain("device_state=" + (e ? "on" : "off"));
            InterfaceProfile.Parse(p.Canonical).Should().Be(p, "the canonical list round-trips");
        }
        else
        {
            p.Canonical.Should().NotContain("device_state", "profiles written before the key existed keep their canonical text");
        }
    }

    [Fact]
    public void Profiles_that_differ_only_in_device_state_are_different_interfaces()
    {
        var off = InterfaceProfile.Parse("type=net,version_1=on,device_state=off");
        var unset = InterfaceProfile.Parse("type=net,version_1=on");
        off.SameInterface(unset).Should().BeFalse();
        off.Diff(unset).Should().ContainSingle().Which.Should().Be(("device_state", "off", "unset"));
        off.WithId("org.example.vnet.v9").DeviceState.Should().BeFalse();
    }

    [Theory]
    [InlineData("device_state=maybe")]
    [InlineData("device_state=")]
    [InlineData("device_state=off,device_state=on")]
    public void Bad_values_name_the_key(string values)
    {
        var act = () => InterfaceProfile.Parse("type=net," + values);
        act.Should().Throw<ProfileFormatException>().Which.Key.Should().Be("device_state");
    }

    [Fact]
    public void A_pin_with_device_state_off_masks_it_from_the_offer_and_the_capability_document()
    {
        var device = new StatefulNetDevice();
        BackendSession.OfferedProtocolFeatures(device, Options).Should().HaveFlag(VhostUserProtocolFeatures.DeviceState);
        var off = InterfaceProfile.Parse("type=net,version_1=on,mrg_rxbuf=on,device_state=off");
        var pin = ProfilePin.Create(device, off);
        pin.OfferedProtocolFeatures(BackendSession.OfferedProtocolFeatures(device, Options)).Should().NotHaveFlag(VhostUserProtocolFeatures.DeviceState);
        ((VhostUserProtocolFeatures)BackendCapabilities.FromDevice(device, Options, null, off).ProtocolFeatures).Should().NotHaveFlag(VhostUserProtocolFeatures.DeviceState);
        var on = InterfaceProfile.Parse("type=net,version_1=on,mrg_rxbuf=on,device_state=on");
        ((VhostUserProtocolFeatures)BackendCapabilities.FromDevice(device, Options, null, on).ProtocolFeatures).Should().HaveFlag(VhostUserProtocolFeatures.DeviceState);
    }

    [Fact]
    public void Device_state_on_needs_a_device_with_state()
    {
        var stateless = new TestNetDevice(Net("version_1,mrg_rxbuf"));
        var on = InterfaceProfile.Parse("type=net,version_1=on,device_state=on");
        on.CheckSupportedBy(stateless).Should().ContainSingle().Which.Should().Contain("device_state=on");
        var act = () => ProfilePin.Create(stateless, on);
        act.Should().Throw<ProfileFormatException>();
        InterfaceProfile.Parse("type=net,version_1=on,device_state=off").CheckSupportedBy(stateless).Should().BeEmpty();
    }

    [Theory]
    [InlineData("7.2.22", "device-state-stream", true)]
    [InlineData("6.2.0", "device-state-stream", true)]
    [InlineData("9.2.1", "device-state-not-checked", false)]
    [InlineData("10.0.2", null, false)]
    [InlineData("11.1.0", null, false)]
    public void A_VM_that_acked_device_state_is_checked_against_the_destination_hypervisor(string destinationVersion, string? code, bool error)
    {
        var record = Record(DeviceStateBit | 0x1a009).WithFrontend(new FrontendInfo("qemu", "10.0.2", "pc-q35-7.2"));
        var dst = Destination().WithFrontend(new FrontendInfo("qemu", destinationVersion, null, ["pc-q35-7.2"]));
        var result = PreflightCheck.Check(null, record, dst);
        result.Compatible.Should().Be(!error);
        if (code is null)
        {
            result.Findings.Should().BeEmpty();
            return;
        }

        var f = result.Findings.Should().ContainSingle().Which;
        f.Code.Should().Be(code);
        f.Severity.Should().Be(error ? PreflightSeverity.Error : PreflightSeverity.Warning);
        f.Message.Should().Contain("qemu 10.0.2 acked DEVICE_STATE").And.Contain(destinationVersion);
        if (error)
        {
            f.Message.Should().Contain("Failed to load virtio-net:virtio").And.Contain("device_state=off");
        }
    }

    [Fact]
    public void Without_device_state_acked_or_without_a_destination_frontend_the_rule_says_nothing()
    {
        var old = new FrontendInfo("qemu", "7.2.22", null, ["pc-q35-7.2"]);
        PreflightCheck.Check(null, Record(0x1a009).WithFrontend(new FrontendInfo("qemu", "10.0.2", "pc-q35-7.2")), Destination().WithFrontend(old))
            .Findings.Should().BeEmpty("a VM pinned to device_state=off never acks it");
        PreflightCheck.Check(null, Record(DeviceStateBit | 0x1a009), Destination()).Findings.Should().BeEmpty("no frontend side given: frontend rules are off");
        PreflightCheck.Check(null, Record(DeviceStateBit | 0x1a009), Destination().WithFrontend(old))
            .Findings.Should().ContainSingle(f => f.Code == "device-state-stream", "the acked bit alone shows a frontend newer than 7.2 negotiated it").Which.Message.Should().StartWith("the VM's frontend acked DEVICE_STATE");
    }

    [Fact]
    public void A_destination_hypervisor_that_is_not_qemu_is_reported_not_checked()
    {
        var result = PreflightCheck.Check(null, Record(DeviceStateBit | 0x1a009), Destination().WithFrontend(new FrontendInfo("cloud-hypervisor", "41.0", null)));
        result.Compatible.Should().BeTrue();
        result.Findings.Select(f => f.Code).Should().BeEquivalentTo("device-state-not-checked", "frontend-not-checked");
    }

    [Fact]
    public void The_record_carries_the_source_state_format_and_a_destination_that_loads_another_one_is_incompatible()
    {
        var record = RecordWithState();
        var json = record.ToJson();
        json.Should().Contain("\"device-state-version\":1");
        var back = AckedStateRecord.Parse(System.Text.Encoding.UTF8.GetBytes(json), "r.json");
        back.DeviceStateVersion.Should().Be(1u);
        back.WithFrontend(new FrontendInfo("qemu", "10.0.2", "pc-q35-7.2")).DeviceStateVersion.Should().Be(1u);

        var loads2 = Destination(2);
        var f = PreflightCheck.Check(null, back, loads2).Findings.Should().ContainSingle().Which;
        f.Code.Should().Be("device-state-version");
        f.Severity.Should().Be(PreflightSeverity.Error);
        f.Message.Should().Contain("format 1").And.Contain("loads only 2");
        PreflightCheck.Check(null, back, Destination(1, 2)).Compatible.Should().BeTrue();
        PreflightCheck.Check(null, back, Destination()).Compatible.Should().BeTrue("a document that does not list formats (a probe, an older document) is not held to one");
    }

    [Fact]
    public void The_capability_document_lists_loadable_formats_only_when_device_state_is_offered()
    {
        var device = new StatefulNetDevice();
        var caps = BackendCapabilities.FromDevice(device, Options);
        caps.DeviceStateVersions.Should().Equal(1u);
        var back = CapabilityDocument.Parse(System.Text.Encoding.UTF8.GetBytes(CapabilityDocument.Render(caps)), "c.json");
        back.DeviceStateVersions.Should().Equal(1u);
        back.WithFrontend(new FrontendInfo("qemu", "10.0.2", null)).DeviceStateVersions.Should().Equal(1u);
        BackendCapabilities.FromDevice(device, Options, null, InterfaceProfile.Parse("type=net,version_1=on,device_state=off")).DeviceStateVersions.Should().BeEmpty();
        BackendCapabilities.FromDevice(new TestNetDevice(Net("version_1")), Options).DeviceStateVersions.Should().BeEmpty();
    }

    [Theory]
    [InlineData("[]")]
    [InlineData("[0]")]
    [InlineData("[1,1]")]
    [InlineData("[-1]")]
    [InlineData("\"1\"")]
    public void Bad_format_lists_in_a_capability_document_are_refused(string list)
    {
        var text = CapabilityDocument.Render(BackendCapabilities.FromDevice(new StatefulNetDevice(), Options))
            .Replace("\"device-state-versions\": [\n      1\n    ]", "\"device-state-versions\": " + list, StringComparison.Ordinal);
        text.Should().Contain("\"device-state-versions\": " + list, "the replacement must hit");
        var act = () => CapabilityDocument.Parse(System.Text.Encoding.UTF8.GetBytes(text), "c.json");
        act.Should().Throw<CompatDocumentException>();
    }

    private static AckedStateRecord Record(ulong protocol)
    {
        var sizes = new Dictionary<int, int> { [0] = 256, [1] = 256 };
        byte[] config = new byte[12];
        return new AckedStateRecord("vm-1.net0", VirtioDeviceType.Net, Net("mrg_rxbuf,protocol_features,version_1"), protocol, null, 2, sizes, config);
    }

    private static BackendCapabilities Destination(params uint[] stateVersions) =>
        new(VirtioDeviceType.Net, Net("mrg_rxbuf,protocol_features,version_1"), 0x1a009 | DeviceStateBit, 2, 1024, 12, new Dictionary<string, string>(), null)
        {
            DeviceStateVersions = stateVersions,
        };

    private static AckedStateRecord RecordWithState()
    {
        var r = Record(DeviceStateBit | 0x1a009);
        return new AckedStateRecord(r.Key, r.DeviceType, r.AckedFeatures, r.AckedProtocolFeatures, null, r.QueueCount, r.QueueSizes, r.Config.Span) { DeviceStateVersion = 1 };
    }

    private sealed class StatefulNetDevice : VhostUserDevice
    {
        public override VirtioDeviceType DeviceType => VirtioDeviceType.Net;

        public override ulong DeviceFeatures => VirtioFeatureBits.Version1 | VirtioFeatureBits.NetMrgRxbuf;

        public override int QueueCount => 2;

        public override uint StateVersion => 1;
    }
}
