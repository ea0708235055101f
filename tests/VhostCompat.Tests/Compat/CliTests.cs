using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using VhostCompat.Backend;
using VhostCompat.Cli;
using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Tests.Compat;

public sealed class CliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vhc-cli").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    internal static async Task<(int Code, string Out, string Err)> Run(params string[] args)
    {
        using var o = new StringWriter();
        using var e = new StringWriter();
        int code = await CliApp.RunAsync(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    private string Write(string name, string content)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllText(path, content);
        return path;
    }

    private static readonly VhostUserBackendOptions Options = new() { SocketPath = "/tmp/x.sock" };

    private string SourceCaps() => Write("src-caps.json", CapabilityDocument.Render(
        new TestNetDevice(TestNetDevice.Parse("version_1,mrg_rxbuf,indirect_desc,event_idx,csum,host_tso4,host_tso6,mq,mtu"), queues: 8),
        Options, ProfileCatalogTests.NetCatalog()));

    private string OldCaps() => Write("dst-caps.json", CapabilityDocument.Render(
        new TestNetDevice(TestNetDevice.Parse("version_1,mrg_rxbuf,csum,mtu"), queues: 2), Options));

    [Fact]
    public async Task Features_decode_and_encode()
    {
        var (code, output, _) = await Run("features", "decode", "0x170008000");
        code.Should().Be(0);
        output.Should().StartWith("0x170008000 = mrg_rxbuf,indirect_desc,event_idx,protocol_features,version_1\n").And.Contain("VIRTIO_NET_F_MRG_RXBUF");

        (code, output, _) = await Run("features", "encode", "--type", "block", "flush,mq,version_1");
        code.Should().Be(0);
        output.Trim().Should().Be("0x100001200");

        (code, output, _) = await Run("features", "decode", "--protocol", "--json", "0x1a009");
        using var doc = JsonDocument.Parse(output);
        doc.RootElement.GetProperty("names").EnumerateArray().Select(e => e.GetString()).Should().Equal("mq", "reply_ack", "reset_device", "configure_mem_slots", "status");

        var (bad, _, err) = await Run("features", "encode", "mrg_rxbuf,nonsense");
        bad.Should().Be(2);
        err.Should().Contain("unknown net feature 'nonsense'");

        (bad, output, _) = await Run("features", "encode", "--json", "nonsense");
        bad.Should().Be(2);
        using (var error = JsonDocument.Parse(output))
        {
            error.RootElement.GetProperty("error").GetString().Should().Contain("nonsense");
        }

        (bad, _, err) = await Run("features", "decode", "0xZZ");
        bad.Should().Be(2);
        err.Should().Contain("0xZZ");
    }

    [Fact]
    public async Task Profile_parse_format_and_diff()
    {
        var (code, output, _) = await Run("profile", "format", "mrg_rxbuf=on", "--type", "net");
        code.Should().Be(0);
        output.Trim().Should().Be(InterfaceProfile.Parse("type=net,mrg_rxbuf=on").Canonical);

        (code, output, _) = await Run("profile", "parse", "--caps", SourceCaps(), "--json", "org.example.vnet.v1");
        code.Should().Be(0);
        using (var doc = JsonDocument.Parse(output))
        {
            doc.RootElement.GetProperty("id").GetString().Should().Be("org.example.vnet.v1");
            doc.RootElement.GetProperty("values").GetProperty("max_ring").GetString().Should().Be("256");
        }

        (code, output, _) = await Run("profile", "diff", "--caps", SourceCaps(), "org.example.vnet.v1", "org.example.vnet.v2");
        code.Should().Be(1);
        output.Should().Contain("max_ring: 256 -> 1024").And.Contain("host_tso4: off -> on");

        (code, _, _) = await Run("profile", "diff", "type=net,mrg_rxbuf=on", "mrg_rxbuf=on,type=net,max_ring=256");
        code.Should().Be(0);

        var (bad, _, err) = await Run("profile", "parse", "type=net,mrg_rxbuf=on,mrg_rxbuf=off");
        bad.Should().Be(2);
        err.Should().Contain("mrg_rxbuf: given twice");

        (bad, _, err) = await Run("profile", "parse", "org.example.vnet.v1");
        bad.Should().Be(2);
        err.Should().Contain("--caps");
    }

    [Fact]
    public async Task Caps_validate_and_record_show()
    {
        var (code, output, _) = await Run("caps", "validate", SourceCaps());
        code.Should().Be(0);
        output.Should().Contain("valid net capability document").And.Contain("profile org.example.vnet.v2 (latest)");

        string broken = Write("broken.json", "{\"type\":\"net\",\"features\":[],\"vhostcompat\":{\"schema-version\":2,\"device-id\":1}}");
        var (bad, _, err) = await Run("caps", "validate", broken);
        bad.Should().Be(2);
        err.Should().Contain(broken);

        string record = Write("rec.json", AckedStateRecordTests.NetRecord().ToJson());
        (code, output, _) = await Run("record", "show", record);
        code.Should().Be(0);
        output.Should().Contain("vm-1234.net0").And.Contain("mrg_rxbuf,indirect_desc,event_idx,protocol_features,version_1").And.Contain("org.example.vnet.v1");

        string tampered = Write("tampered.json", File.ReadAllText(record).Replace("\"queue-count\":2", "\"queue-count\":4", StringComparison.Ordinal));
        (bad, _, err) = await Run("record", "show", tampered);
        bad.Should().Be(2);
        err.Should().Contain("checksum mismatch");

        (bad, _, err) = await Run("record", "show", Path.Combine(_dir, "missing.json"));
        bad.Should().Be(2);
        err.Should().Contain("no such file");
    }

    [Fact]
    public async Task Catalog_verify_creates_checks_and_refuses_shrinking()
    {
        string caps = SourceCaps();
        string lockPath = Path.Combine(_dir, "profiles.lock.json");
        var (code, _, err) = await Run("catalog", "verify", "--caps", caps, "--lock", lockPath);
        code.Should().Be(2);
        err.Should().Contain("--update");

        (code, var output, _) = await Run("catalog", "verify", "--caps", caps, "--lock", lockPath, "--update");
        code.Should().Be(0);
        output.Should().Contain("written");
        (code, _, _) = await Run("catalog", "verify", "--caps", caps, "--lock", lockPath);
        code.Should().Be(0);

        var smaller = ProfileCatalog.Declare(VirtioDeviceType.Net, "org.example.vnet.v1", ("org.example.vnet.v1", "version_1=on,mrg_rxbuf=on,max_ring=256"));
        string shrunk = Write("shrunk.json", CapabilityDocument.Render(new TestNetDevice(TestNetDevice.Parse("version_1,mrg_rxbuf")), Options, smaller));
        (code, output, _) = await Run("catalog", "verify", "--caps", shrunk, "--lock", lockPath, "--update", "--json");
        code.Should().Be(1);
        using var doc = JsonDocument.Parse(output);
        doc.RootElement.GetProperty("lock-written").GetBoolean().Should().BeFalse();
        doc.RootElement.GetProperty("lock-findings")[0].GetProperty("kind").GetString().Should().Be("removed");
        ProfileLock.Load(lockPath).Profiles.Should().HaveCount(2);
    }

    [Fact]
    public async Task Check_exit_codes_follow_the_verdict()
    {
        string dst = OldCaps();
        var tso = AckedStateRecordTests.NetRecord(features: TestNetDevice.Parse("csum,host_tso4,host_tso6,mrg_rxbuf,version_1,protocol_features"));
        string tsoRecord = Write("tso.json", tso.ToJson());
        var (code, output, _) = await Run("check", "--record", tsoRecord, "--caps", dst);
        code.Should().Be(1);
        output.Should().StartWith("incompatible\n").And.Contain("host_tso4, host_tso6");

        string plain = Write("plain.json", AckedStateRecordTests.NetRecord(features: TestNetDevice.Parse("mrg_rxbuf,version_1,protocol_features")).ToJson());
        (code, output, _) = await Run("check", "--record", plain, "--caps", dst, "--json");
        code.Should().Be(0, output);
        using (var doc = JsonDocument.Parse(output))
        {
            doc.RootElement.GetProperty("compatible").GetBoolean().Should().BeTrue();
        }

        (code, output, _) = await Run("check", "--profile", "org.example.vnet.v2", "--source-caps", SourceCaps(), "--caps", dst);
        code.Should().Be(1);
        output.Should().Contain("profile-unsupported");

        var (bad, _, err) = await Run("check", "--record", plain);
        bad.Should().Be(2);
        err.Should().Contain("exactly one of --caps");

        (bad, _, _) = await Run("check", "--record", Write("junk.json", "{"), "--caps", dst);
        bad.Should().Be(2);
    }

    [Fact]
    public async Task Probe_reports_a_live_backend_and_check_accepts_a_socket()
    {
        string socket = Path.Combine(_dir, "b.sock");
        var device = new TestNetDevice(TestNetDevice.Parse("version_1,mrg_rxbuf,event_idx,mq,mtu"), queues: 4, maxQueueSize: 512, mtu: 9000);
        using var stop = new CancellationTokenSource();
        var backend = new VhostUserBackend(device, new VhostUserBackendOptions { SocketPath = socket }, NullLoggerFactory.Instance);
        var run = Task.Run(() => backend.RunAsync(stop.Token));
        try
        {
            for (int i = 0; i < 200 && !File.Exists(socket); i++)
            {
                await Task.Delay(10);
            }

            var (code, output, err) = await Run("probe", "--json", socket);
            code.Should().Be(0, err);
            var caps = CapabilityDocument.Parse(Encoding.UTF8.GetBytes(output), "probe");
            caps.VirtioFeatures.Should().Be(device.DeviceFeatures | VirtioFeatureBits.ProtocolFeatures | VirtioFeatureBits.LogAll);
            caps.Queues.Should().Be(4);
            caps.QueueNumReply.Should().Be(2);
            caps.MaxQueueSize.Should().Be(512);

            (code, output, _) = await Run("probe", socket);
            code.Should().Be(0);
            output.Should().Contain("max ring size 512").And.Contain("mrg_rxbuf");

            string rec = Write("rec.json", AckedStateRecordTests.NetRecord(features: TestNetDevice.Parse("csum,mrg_rxbuf,version_1")).ToJson());
            (code, output, _) = await Run("check", "--record", rec, "--socket", socket);
            code.Should().Be(1);
            output.Should().Contain("features-unsupported").And.Contain("csum");
        }
        finally
        {
            stop.Cancel();
            try
            {
                await run;
            }
            catch (OperationCanceledException)
            {
            }
        }

        var (failed, _, message) = await Run("probe", Path.Combine(_dir, "nobody.sock"));
        failed.Should().Be(2);
        message.Should().Contain("nobody.sock");
    }
}
