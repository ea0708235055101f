using System.Text;
using System.Text.Json.Nodes;
using VhostCompat.Compat;
using VhostCompat.Tests.Support;

namespace VhostCompat.Tests.Compat;

/// <summary><c>vhost-compat frontend</c> against a fake QMP monitor and fake hypervisor binaries, and its argument errors.</summary>
public sealed class FrontendCliTests : IDisposable
{
    private readonly TempDir _tmp = new("vhc-fcli");

    public void Dispose() => _tmp.Dispose();

    private string Socket => _tmp.Combine("vm.qmp");

    /// <summary>Exit 2 with one line on stderr naming the problem, nothing on stdout, no stack trace.</summary>
    internal static void ShouldFailOnOneLine((int Code, string Out, string Err) run, string fragment)
    {
        run.Code.Should().Be(2, run.Err);
        run.Out.Should().BeEmpty();
        string line = run.Err.TrimEnd('\n').Should().NotContain("\n", "one line: {0}", run.Err).And.Subject;
        line.Should().StartWith("vhost-compat: ").And.Contain(fragment).And.NotContain("   at ");
    }

    /// <summary>What the captured QEMU says, as the frontend document the client should produce.</summary>
    private static FrontendInfo Expected(JsonObject capture, string? machine) =>
        new("qemu", QemuCapture.Version(capture), machine, QemuCapture.Machines(capture));

    [Theory]
    [InlineData("7.2")]
    [InlineData("10.0")]
    public async Task A_running_vm_is_read_over_its_qmp_socket(string version)
    {
        var capture = version == "10.0" ? QemuCapture.Qemu100() : QemuCapture.Qemu72();
        await using var qemu = new FakeQmpServer(Socket, FakeQmpServer.Honest(capture));
        var (code, output, err) = await CliTests.Run("frontend", "--qmp", Socket);
        code.Should().Be(0, err);
        FrontendInfoTests.ShouldBeSame(FrontendInfo.Parse(Encoding.UTF8.GetBytes(output), "out"), Expected(capture, QemuCapture.VmMachine(capture)));
        qemu.Commands.Should().Equal("qmp_capabilities", "query-version", "query-machines", "qom-get");
    }

    [Fact]
    public async Task The_vm_side_is_embedded_in_a_record_and_machine_overrides_what_qmp_said()
    {
        var capture = QemuCapture.Qemu72();
        await using var qemu = new FakeQmpServer(Socket, FakeQmpServer.Honest(capture));
        var original = AckedStateRecordTests.NetRecord();
        string recordPath = _tmp.Write("rec.json", original.ToJson());
        var (code, output, err) = await CliTests.Run("frontend", "--qmp", Socket, "--record", recordPath);
        code.Should().Be(0, err);
        var record = AckedStateRecord.Parse(Encoding.UTF8.GetBytes(output), "out");
        FrontendInfoTests.ShouldBeSame(record.Frontend!, Expected(capture, QemuCapture.VmMachine(capture)));
        record.WithFrontend(null).ToJson().Should().Be(original.ToJson());
        (code, output, _) = await CliTests.Run("record", "show", _tmp.Write("rec-fe.json", output));
        code.Should().Be(0);
        output.Should().EndWith($"  frontend {record.Frontend}\n");

        (code, output, err) = await CliTests.Run("frontend", "--qmp", Socket, "--machine", "pc-q35-6.2");
        code.Should().Be(0, err);
        FrontendInfo.Parse(Encoding.UTF8.GetBytes(output), "out").Machine.Should().Be("pc-q35-6.2");

        ShouldFailOnOneLine(await CliTests.Run("frontend", "--qmp", Socket, "--machine", "pc q35"), "--machine");
    }

    [Fact]
    public async Task A_binary_is_started_with_the_extra_arguments_first_and_embedded_in_a_capability_document()
    {
        var capture = QemuCapture.Qemu72();
        string qemu = FakeQemuBinary.Speaking(_tmp.Path, capture);
        string caps = _tmp.Write("caps.json", CapabilityDocument.Render(new TestNetDevice(TestNetDevice.Parse("version_1,mrg_rxbuf")), new() { SocketPath = "/tmp/x.sock" }));
        var (code, output, err) = await CliTests.Run("frontend", "--qemu", qemu, "--qemu-arg", "-L", "--qemu-arg", "/usr/share/qemu", "--caps", caps);
        code.Should().Be(0, err);
        var parsed = CapabilityDocument.Parse(Encoding.UTF8.GetBytes(output), "out");
        FrontendInfoTests.ShouldBeSame(parsed.Frontend!, Expected(capture, null));
        CapabilityDocument.Render(parsed.WithFrontend(null)).Should().Be(File.ReadAllText(caps));
        (code, output, _) = await CliTests.Run("caps", "validate", _tmp.Write("caps-fe.json", output));
        code.Should().Be(0);
        output.Should().EndWith($"  frontend {parsed.Frontend}, {parsed.Frontend!.Machines.Count} machine types\n");
        var args = FakeQemuBinary.Arguments(_tmp.Path);
        args.Take(2).Should().Equal("-L", "/usr/share/qemu");
        args.Should().ContainInConsecutiveOrder("-machine", "none").And.ContainInConsecutiveOrder("-qmp", "stdio").And.Contain("-S");
    }

    [Fact]
    public async Task A_binary_that_fails_is_reported_with_its_exit_code_and_first_error_line()
    {
        string qemu = FakeQemuBinary.Failing(_tmp.Path, "qemu-system-x86_64: -L /nope: unknown option", 1);
        var run = await CliTests.Run("frontend", "--qemu", qemu, "--qemu-arg", "-L");
        ShouldFailOnOneLine(run, "exited with 1");
        run.Err.Should().Contain("-L /nope: unknown option");
    }

    [Theory]
    [InlineData("--qemu", "missing")]
    [InlineData("--qemu", "regular file")]
    [InlineData("--qemu", "directory")]
    [InlineData("--qemu", "too long")]
    [InlineData("--qemu", "empty")]
    [InlineData("--qmp", "missing")]
    [InlineData("--qmp", "regular file")]
    [InlineData("--qmp", "directory")]
    [InlineData("--qmp", "too long")]
    [InlineData("--qmp", "empty")]
    public async Task A_path_that_is_no_binary_or_socket_is_one_line(string option, string kind)
    {
        string path = kind switch
        {
            "missing" => _tmp.Combine("missing"),
            "regular file" => _tmp.Write("regular", "#!/bin/sh\n"),
            "directory" => _tmp.Path,
            "too long" => _tmp.Combine(new string('s', 200)),
            _ => string.Empty,
        };

        // A path is named when there is one; an empty one, or one too long for a socket address, by the option.
        bool byOption = path.Length == 0 || (option == "--qmp" && kind == "too long");
        ShouldFailOnOneLine(await CliTests.Run("frontend", option, path), byOption ? option : path);
    }

    [Fact]
    public async Task Contradictory_arguments_are_one_line()
    {
        string qemu = FakeQemuBinary.Speaking(_tmp.Path, QemuCapture.Qemu72());
        string rec = _tmp.Write("rec.json", AckedStateRecordTests.NetRecord().ToJson());
        ShouldFailOnOneLine(await CliTests.Run("frontend"), "exactly one of --qmp");
        ShouldFailOnOneLine(await CliTests.Run("frontend", "--qmp", Socket, "--qemu", qemu), "exactly one of --qmp");
        ShouldFailOnOneLine(await CliTests.Run("frontend", "--qemu", qemu, "--record", rec, "--caps", rec), "at most one of --record and --caps");
        ShouldFailOnOneLine(await CliTests.Run("frontend", "--qmp", Socket, "--qemu-arg", "-L"), "--qemu-arg needs --qemu");
        ShouldFailOnOneLine(await CliTests.Run("frontend", "--qemu", qemu, "--timeout", "0"), "--timeout");
        ShouldFailOnOneLine(await CliTests.Run("frontend", "--qemu", qemu, "--record", _tmp.Combine("missing.json")), "missing.json");
        File.Exists(_tmp.Combine("args")).Should().BeFalse("nothing is started when the inputs are bad");
    }
}
