using CsCheck;
using VhostCompat.Backend;
using VhostCompat.Compat;

namespace VhostCompat.Tests.Compat;

/// <summary>The frontend rule of <see cref="PreflightCheck"/>: machine-type, and frontend-not-checked when a side is unknown.</summary>
public class FrontendPreflightTests
{
    private static readonly VhostUserBackendOptions Options = new() { SocketPath = "/tmp/x.sock" };

    /// <summary>A destination backend that carries <see cref="AckedStateRecordTests.NetRecord"/> as far as the backend rules go.</summary>
    private static BackendCapabilities Backend() =>
        BackendCapabilities.FromDevice(new TestNetDevice(TestNetDevice.Parse("version_1,mrg_rxbuf,indirect_desc,event_idx,csum,host_tso4,host_tso6,mq,mtu"), queues: 8), Options, ProfileCatalogTests.NetCatalog());

    private static PreflightResult Check(FrontendInfo? vm, FrontendInfo? host) =>
        PreflightCheck.Check(null, AckedStateRecordTests.NetRecord().WithFrontend(vm), Backend().WithFrontend(host));

    [Fact]
    public void Without_frontends_the_backend_rules_alone_pass()
    {
        var result = Check(null, null);
        result.Compatible.Should().BeTrue(result.ToText());
        result.Findings.Should().BeEmpty();
    }

    [Fact]
    public void A_vm_on_a_machine_type_the_destination_lacks_is_incompatible()
    {
        // A VM created by QEMU 10.0 with its own machine type cannot be started by QEMU 7.2 ("unsupported machine type").
        var qemu10 = QemuCapture.Qemu100();
        var vm = QemuCapture.Host(qemu10).WithMachine(QemuCapture.VmMachine(qemu10));
        vm.Machine.Should().Be("pc-q35-10.0");
        var host = QemuCapture.Host();
        var result = Check(vm, host);
        result.Compatible.Should().BeFalse();
        result.ExitCode.Should().Be(1);
        var f = result.Findings.Should().ContainSingle().Which;
        f.Code.Should().Be("machine-type");
        f.Severity.Should().Be(PreflightSeverity.Error);
        f.Features.Should().BeEmpty();
        f.Message.Should().Contain("pc-q35-10.0").And.Contain($"qemu {vm.Version}").And.Contain($"qemu {host.Version}");
        result.ToText().Should().StartWith("incompatible\n  error machine-type: ");
    }

    [Fact]
    public void Every_machine_type_the_destination_lists_passes_and_any_other_fails()
    {
        var host = QemuCapture.Host();
        host.Machines.Should().Contain("pc-q35-7.2");
        foreach (string machine in host.Machines)
        {
            var ok = Check(FrontendInfoTests.Vm(machine), host);
            ok.Compatible.Should().BeTrue(ok.ToText());
            ok.Findings.Should().BeEmpty();
        }

        FrontendInfoTests.GenName.Where(m => !host.Machines.Contains(m)).Sample(machine =>
            Check(FrontendInfoTests.Vm(machine), host).Findings.Should().ContainSingle().Which.Code.Should().Be("machine-type"), iter: 100);
    }

    [Fact]
    public void An_upgrade_fails_for_a_machine_type_the_newer_qemu_dropped()
    {
        // QEMU 10.0 no longer has the oldest i440fx machine types that 7.2 still runs.
        var qemu72 = QemuCapture.Host();
        var qemu10 = QemuCapture.Host(QemuCapture.Qemu100());
        qemu72.CanLoad("pc-i440fx-2.0").Should().BeTrue();
        Check(qemu72.WithMachine("pc-i440fx-2.0"), qemu10).Findings.Should().ContainSingle().Which.Code.Should().Be("machine-type");
        Check(qemu72.WithMachine(QemuCapture.VmMachine(QemuCapture.Qemu72())), qemu10).Findings.Should().BeEmpty();
    }

    public static TheoryData<string, FrontendInfo?, FrontendInfo?> OneSideUnknown() => new()
    {
        { "the VM's frontend is not recorded", null, QemuCapture.Host() },
        { "the VM's frontend has no machine type", QemuCapture.Host().WithMachine(null), QemuCapture.Host() },
        { "the destination's frontend is not recorded", FrontendInfoTests.Vm("pc-q35-7.2"), null },
        { "the destination's machine types are not known", FrontendInfoTests.Vm("pc-q35-7.2"), new FrontendInfo("qemu", "7.2.22", null) },
    };

    [Theory]
    [MemberData(nameof(OneSideUnknown))]
    public void One_side_unknown_is_a_warning_not_a_verdict(string why, FrontendInfo? vm, FrontendInfo? host)
    {
        var result = Check(vm, host);
        result.Compatible.Should().BeTrue(why);
        var f = result.Findings.Should().ContainSingle(why).Which;
        f.Code.Should().Be("frontend-not-checked");
        f.Severity.Should().Be(PreflightSeverity.Warning);
    }

    [Fact]
    public void A_machine_type_error_is_reported_with_the_backend_errors()
    {
        var record = AckedStateRecordTests.NetRecord(features: TestNetDevice.Parse("guest_tso4,mrg_rxbuf,protocol_features,version_1")).WithFrontend(FrontendInfoTests.Vm("pc-q35-10.0"));
        var result = PreflightCheck.Check(null, record, Backend().WithFrontend(QemuCapture.Host()));
        result.Findings.Select(f => f.Code).Should().BeEquivalentTo(["machine-type", "features-unsupported"]);
    }

    [Fact]
    public void A_profile_only_check_against_a_known_host_warns_that_the_vm_is_unknown()
    {
        var profile = InterfaceProfile.Parse("type=net,version_1=on,mrg_rxbuf=on");
        var result = PreflightCheck.Check(profile, null, Backend().WithFrontend(QemuCapture.Host()));
        result.Compatible.Should().BeTrue(result.ToText());
        result.Findings.Should().ContainSingle().Which.Code.Should().Be("frontend-not-checked");
    }
}
