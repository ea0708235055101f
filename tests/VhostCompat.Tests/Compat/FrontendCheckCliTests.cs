using System.Text.Json;
using System.Text.Json.Nodes;
using VhostCompat.Backend;
using VhostCompat.Compat;
using VhostCompat.Tests.Support;

namespace VhostCompat.Tests.Compat;

/// <summary>
/// The operator's flow end to end: <c>frontend --qmp</c> on the VM (a fake monitor), <c>frontend --qemu</c> on the
/// destination (a fake binary answering with the QEMU 7.2 capture), then <c>check</c> with the documents given
/// separately (<c>--vm-frontend</c>, <c>--frontend</c>) or embedded in the record and the capability document.
/// </summary>
public sealed class FrontendCheckCliTests : IDisposable
{
    private readonly TempDir _tmp = new("vhc-fchk");

    public void Dispose() => _tmp.Dispose();

    private static string DestinationVersion => "qemu " + QemuCapture.Version(QemuCapture.Qemu72());

    private string Record() => _tmp.Write("rec.json", AckedStateRecordTests.NetRecord().ToJson());

    /// <summary>A destination backend that carries the record: only the frontend can make the check fail.</summary>
    private string Caps() => _tmp.Write("caps.json", CapabilityDocument.Render(
        new TestNetDevice(TestNetDevice.Parse("version_1,mrg_rxbuf,indirect_desc,event_idx,csum,host_tso4,host_tso6,mq,mtu"), queues: 8),
        new VhostUserBackendOptions { SocketPath = "/tmp/x.sock" }, ProfileCatalogTests.NetCatalog()));

    /// <summary>Output of a successful <c>vhost-compat</c> run, written to <paramref name="name"/>.</summary>
    private async Task<string> Saved(string name, params string[] args)
    {
        var (code, output, err) = await CliTests.Run(args);
        code.Should().Be(0, err);
        return _tmp.Write(name, output);
    }

    /// <summary><c>frontend --qmp</c> against a VM on <paramref name="machine"/> (null: the captured one) run by the QEMU in <paramref name="capture"/>, plus <paramref name="more"/> arguments.</summary>
    private async Task<string> FromVm(string name, JsonObject capture, string? machine, params string[] more)
    {
        string socket = _tmp.Combine("vm.qmp");
        await using var qemu = new FakeQmpServer(socket, FakeQmpServer.Honest(capture, machine));
        return await Saved(name, ["frontend", "--qmp", socket, .. more]);
    }

    private Task<string> FromDestination(string name, params string[] more) =>
        Saved(name, ["frontend", "--qemu", FakeQemuBinary.Speaking(_tmp.Path, QemuCapture.Qemu72()), .. more]);

    [Fact]
    public async Task A_vm_on_a_machine_type_the_destination_lacks_is_incompatible()
    {
        // QEMU 10.0 running a VM created on it (-machine q35 is pc-q35-10.0), QEMU 7.2 as the destination.
        var qemu10 = QemuCapture.Qemu100();
        string vm = await FromVm("vm.json", qemu10, null);
        string dst = await FromDestination("dst.json");
        var (code, output, _) = await CliTests.Run("check", "--record", Record(), "--caps", Caps(), "--vm-frontend", vm, "--frontend", dst);
        code.Should().Be(1, output);
        output.Should().StartWith("incompatible\n  error machine-type: ")
            .And.Contain(QemuCapture.VmMachine(qemu10)).And.Contain("qemu " + QemuCapture.Version(qemu10)).And.Contain(DestinationVersion);

        (code, output, _) = await CliTests.Run("check", "--record", Record(), "--caps", Caps(), "--vm-frontend", vm, "--frontend", dst, "--json");
        code.Should().Be(1);
        using var doc = JsonDocument.Parse(output);
        doc.RootElement.GetProperty("compatible").GetBoolean().Should().BeFalse();
        var finding = doc.RootElement.GetProperty("findings").EnumerateArray().Should().ContainSingle().Which;
        finding.GetProperty("code").GetString().Should().Be("machine-type");
        finding.GetProperty("severity").GetString().Should().Be("error");
    }

    [Theory]
    [InlineData("7.2")]
    [InlineData("10.0")]
    public async Task A_vm_on_a_machine_type_the_destination_has_is_compatible(string vmQemu)
    {
        // A QEMU 10.0 running a VM created on 7.2 keeps its pc-q35-7.2 machine type: that VM can move back.
        string vm = await FromVm("vm.json", vmQemu == "10.0" ? QemuCapture.Qemu100() : QemuCapture.Qemu72(), QemuCapture.VmMachine(QemuCapture.Qemu72()));
        string dst = await FromDestination("dst.json");
        var (code, output, _) = await CliTests.Run("check", "--record", Record(), "--caps", Caps(), "--vm-frontend", vm, "--frontend", dst);
        code.Should().Be(0, output);
        output.Should().Be("compatible\n");
    }

    [Fact]
    public async Task Frontends_embedded_by_the_frontend_command_are_checked_without_further_options()
    {
        string record = await FromVm("rec-fe.json", QemuCapture.Qemu100(), null, "--record", Record());
        string caps = await FromDestination("caps-fe.json", "--caps", Caps());
        var (code, output, _) = await CliTests.Run("check", "--record", record, "--caps", caps);
        code.Should().Be(1, output);
        output.Should().Contain("error machine-type: ");

        // A record without its VM's frontend is not refused for it, only warned about.
        (code, output, _) = await CliTests.Run("check", "--record", Record(), "--caps", caps);
        code.Should().Be(0, output);
        output.Should().StartWith("compatible\n  warning frontend-not-checked: ").And.Contain(DestinationVersion);

        // --vm-frontend replaces the record's own.
        string older = await FromVm("vm72.json", QemuCapture.Qemu72(), null);
        (code, output, _) = await CliTests.Run("check", "--record", record, "--caps", caps, "--vm-frontend", older);
        code.Should().Be(0, output);
    }

    [Fact]
    public async Task Bad_frontend_inputs_are_one_line()
    {
        string vm = await FromVm("vm.json", QemuCapture.Qemu100(), null);
        FrontendCliTests.ShouldFailOnOneLine(await CliTests.Run("check", "--profile", "type=net,mrg_rxbuf=on", "--caps", Caps(), "--vm-frontend", vm), "--vm-frontend needs --record");
        string broken = _tmp.Write("broken.json", "{\"format\":\"vhostcompat-frontend\",\"version\":1,\"product\":\"qemu\"}");
        FrontendCliTests.ShouldFailOnOneLine(await CliTests.Run("check", "--record", Record(), "--caps", Caps(), "--vm-frontend", broken), broken);
        FrontendCliTests.ShouldFailOnOneLine(await CliTests.Run("check", "--record", Record(), "--caps", Caps(), "--frontend", Record()), "$.format");

        // A value quoted in the message cannot break it into lines.
        string twoLines = _tmp.Write("two-lines.json", FrontendInfoTests.Vm().ToJson().Replace("\"machine\": \"pc-q35-10.0\"", "\"machine\": \"pc\\nq35\"", StringComparison.Ordinal));
        FrontendCliTests.ShouldFailOnOneLine(await CliTests.Run("check", "--record", Record(), "--caps", Caps(), "--vm-frontend", twoLines), "'pc\\nq35'");
        string missing = _tmp.Combine("missing.json");
        FrontendCliTests.ShouldFailOnOneLine(await CliTests.Run("check", "--record", Record(), "--caps", Caps(), "--frontend", missing), missing);
    }
}
