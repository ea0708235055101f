using System.Diagnostics;
using System.Net.Sockets;
using VhostCompat.Backend;
using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Tests.Compat;

/// <summary><c>vhost-compat libvirt hook</c>: arguments, operations, verdicts from capability documents, bounded probes.</summary>
public sealed class LibvirtHookTests : IDisposable
{
    private readonly LibvirtAnnotateTests _files = new();
    private readonly string _capsDir = Directory.CreateTempSubdirectory("vhc-hook-caps").FullName;

    public void Dispose()
    {
        _files.Dispose();
        Directory.Delete(_capsDir, recursive: true);
    }

    private async Task<string> AnnotatedAsync(string profile = "org.example.vnet.v2")
    {
        var (code, output, err) = await CliTests.Run("libvirt", "annotate", "--caps", _files.NetCaps(), "--profile", profile, _files.Write("in.xml", LibvirtAnnotateTests.Domain));
        code.Should().Be(0, err);
        return _files.Write("annotated.xml", output);
    }

    private void DestinationCaps(string features, int queues, string name = "net.json") =>
        File.WriteAllText(Path.Combine(_capsDir, name), CapabilityDocument.Render(
            new TestNetDevice(TestNetDevice.Parse(features), queues: queues), new VhostUserBackendOptions { SocketPath = "/tmp/x.sock" }));

    private static Task<(int Code, string Out, string Err)> Hook(string xml, string op, string sub, params string[] options) =>
        CliTests.Run(["libvirt", "hook", .. options, "--domain-xml", xml, "vm1", op, sub, "-"]);

    [Fact]
    public async Task Wrong_argument_count_is_one_line_and_exit_2()
    {
        var (code, output, err) = await CliTests.Run("libvirt", "hook", "vm1", "migrate");
        code.Should().Be(2);
        output.Should().BeEmpty();
        err.Should().Be("vhost-compat: hook: expected the 4 arguments libvirt passes (DOMAIN OPERATION SUB-OPERATION EXTRA), got 2\n");

        (code, _, err) = await CliTests.Run("libvirt", "hook", "--deadline", "0", "vm1", "migrate", "begin", "-");
        code.Should().Be(2);
        err.Should().Contain("--deadline 0 outside");
    }

    [Theory]
    [InlineData("started", "begin")]
    [InlineData("stopped", "end")]
    [InlineData("release", "end")]
    [InlineData("migrate", "end")]
    [InlineData("restore", "begin")]
    [InlineData("some-future-operation", "begin")]
    public async Task Other_operations_do_nothing_and_print_nothing(string op, string sub)
    {
        var (code, output, err) = await Hook(await AnnotatedAsync(), op, sub, "--caps-dir", "/nonexistent");
        code.Should().Be(0);
        output.Should().BeEmpty();
        err.Should().BeEmpty();
    }

    [Fact]
    public async Task Migrate_begin_against_a_capability_document_that_carries_the_profile_is_silent()
    {
        DestinationCaps("version_1,mrg_rxbuf,indirect_desc,event_idx,csum,host_tso4,host_tso6,mq,mtu", 8);
        var (code, output, err) = await Hook(await AnnotatedAsync(), "migrate", "begin", "--caps-dir", _capsDir, "--no-probe", "--allow-unannotated");
        code.Should().Be(0, err);
        output.Should().BeEmpty();
        err.Should().BeEmpty();
    }

    [Fact]
    public async Task Migrate_begin_against_an_older_backend_prints_one_line_per_problem_and_exits_1()
    {
        DestinationCaps("version_1,mrg_rxbuf,mtu", 2);
        var (code, output, err) = await Hook(await AnnotatedAsync(), "migrate", "begin", "--caps-dir", _capsDir, "--no-probe", "--allow-unannotated");
        code.Should().Be(1);
        output.Should().BeEmpty("stdout is libvirt's replacement XML: never written");
        var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        lines.Should().HaveCount(4, "two findings (features, queue count) for each of the two annotated interfaces:\n" + err);
        lines[0].Should().StartWith("vhost-compat: vm1: interface 52:54:00:12:34:56 (ua-net0): profile-unsupported: profile org.example.vnet.v2 needs features the destination does not offer: csum");
        lines[1].Should().StartWith("vhost-compat: vm1: interface 52:54:00:12:34:56 (ua-net0): profile-unsupported: profile org.example.vnet.v2 has 4 virtqueues, the destination serves 2");
        lines[2].Should().StartWith("vhost-compat: vm1: interface 52:54:00:aa:bb:cc: profile-unsupported:");

        // The older profile fits: annotated with v1, the same destination is compatible.
        (code, _, err) = await Hook(await AnnotatedAsync("org.example.vnet.v1"), "migrate", "begin", "--caps-dir", _capsDir, "--no-probe", "--allow-unannotated");
        code.Should().Be(0, err);
    }

    [Fact]
    public async Task A_key_specific_document_wins_over_the_type_document()
    {
        DestinationCaps("version_1,mrg_rxbuf,mtu", 2);
        DestinationCaps("version_1,mrg_rxbuf,indirect_desc,event_idx,csum,host_tso4,host_tso6,mq,mtu", 8, AckedStateStore.DefaultKey("/run/vnet/vm1.net0.sock") + ".json");
        var (code, _, err) = await Hook(await AnnotatedAsync(), "migrate", "begin", "--caps-dir", _capsDir, "--no-probe", "--allow-unannotated");
        code.Should().Be(1);
        err.Should().NotContain("52:54:00:12:34:56").And.Contain("52:54:00:aa:bb:cc");
    }

    [Fact]
    public async Task Unannotated_devices_are_refused_on_migrate_unless_allowed_and_ignored_on_start()
    {
        var plain = _files.Write("plain.xml", LibvirtAnnotateTests.Domain);
        var (code, output, err) = await Hook(plain, "migrate", "begin", "--caps-dir", _capsDir);
        code.Should().Be(2);
        output.Should().BeEmpty();
        err.Split('\n', StringSplitOptions.RemoveEmptyEntries).Should().HaveCount(3, "two interfaces and one disk, one line each:\n" + err);
        err.Should().Contain("disk vdb: no VhostCompat metadata");

        (code, _, err) = await Hook(plain, "migrate", "begin", "--caps-dir", _capsDir, "--allow-unannotated");
        code.Should().Be(0, err);
        (code, _, err) = await Hook(plain, "prepare", "begin");
        code.Should().Be(0, err);
        err.Should().BeEmpty();
    }

    [Fact]
    public async Task Missing_and_stale_documents_refuse_with_exit_2()
    {
        var xml = await AnnotatedAsync();
        var (code, _, err) = await Hook(xml, "migrate", "begin", "--caps-dir", _capsDir, "--no-probe", "--allow-unannotated");
        code.Should().Be(2);
        err.Should().Contain("no capability document for key").And.Contain("net.json");

        DestinationCaps("version_1,mrg_rxbuf,indirect_desc,event_idx,csum,host_tso4,host_tso6,mq,mtu", 8);
        File.SetLastWriteTimeUtc(Path.Combine(_capsDir, "net.json"), DateTime.UtcNow.AddDays(-3));
        (code, _, err) = await Hook(xml, "migrate", "begin", "--caps-dir", _capsDir, "--no-probe", "--allow-unannotated", "--caps-max-age", "86400");
        code.Should().Be(2);
        err.Should().Contain("is stale: written").And.Contain("--caps-max-age 86400 s");

        File.WriteAllText(Path.Combine(_capsDir, "net.json"), "{\"type\":\"net\"");
        (code, _, err) = await Hook(xml, "migrate", "begin", "--caps-dir", _capsDir, "--no-probe", "--allow-unannotated");
        code.Should().Be(2);
        err.Split('\n', StringSplitOptions.RemoveEmptyEntries).Should().HaveCount(2).And.OnlyContain(l => l.Contains("net.json", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Malformed_metadata_refuses_every_operation_that_checks()
    {
        var xml = _files.Write("bad.xml", LibvirtAnnotateTests.Domain.Replace("<memory", "<metadata><v:devices xmlns:v='https://vhostcompat.org/xmlns/libvirt/9'/></metadata><memory", StringComparison.Ordinal));
        foreach (var op in new[] { "migrate", "prepare", "start" })
        {
            var (code, output, err) = await Hook(xml, op, "begin");
            code.Should().Be(2);
            output.Should().BeEmpty();
            err.Should().Be("vhost-compat: vm1: VhostCompat metadata: namespace 'https://vhostcompat.org/xmlns/libvirt/9' is not one this tool reads (https://vhostcompat.org/xmlns/libvirt/1)\n");
        }
    }

    [Fact]
    public async Task A_socket_that_does_not_answer_is_refused_within_the_timeout()
    {
        string dir = Directory.CreateTempSubdirectory("vhc-hook-sock").FullName;
        try
        {
            string path = Path.Combine(dir, "mute.sock");
            using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            listener.Bind(new UnixDomainSocketEndPoint(path));
            listener.Listen(4);
            var domain = LibvirtAnnotateTests.Domain.Replace("/run/vnet/vm1.net0.sock", path, StringComparison.Ordinal)
                .Replace("mode='server'", "mode='client'", StringComparison.Ordinal).Replace("/run/vnet/vm1.net1.sock", Path.Combine(dir, "absent.sock"), StringComparison.Ordinal);
            var (c, annotated, e) = await CliTests.Run("libvirt", "annotate", "--caps", _files.NetCaps(), _files.Write("mute.xml", domain));
            c.Should().Be(0, e);
            var xml = _files.Write("mute-annotated.xml", annotated);

            var clock = Stopwatch.StartNew();
            var (code, output, err) = await Hook(xml, "prepare", "begin", "--timeout", "0.5");
            clock.Elapsed.Should().BeLessThan(TimeSpan.FromSeconds(10));
            code.Should().Be(2);
            output.Should().BeEmpty();
            var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            lines.Should().HaveCount(2, err);
            lines[0].Should().Contain("52:54:00:12:34:56").And.Contain("cannot probe the backend").And.Contain("mute.sock");
            lines[1].Should().Contain("52:54:00:aa:bb:cc").And.Contain("absent.sock");

            // The whole hook is bounded too: a deadline shorter than the reply timeout wins.
            clock.Restart();
            (code, _, err) = await Hook(xml, "migrate", "begin", "--timeout", "30", "--deadline", "1", "--allow-unannotated");
            clock.Elapsed.Should().BeLessThan(TimeSpan.FromSeconds(10));
            code.Should().Be(2);
            err.Should().Contain("gave up after 1 s (--deadline)");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Pin_differences_name_what_the_backend_offers_beyond_or_lacks()
    {
        var profile = ProfileCatalogTests.NetCatalog().Find("org.example.vnet.v1")!;
        var exact = new BackendCapabilities(VirtioDeviceType.Net, profile.Features | VirtioFeatureBits.LogAll | VirtioFeatureBits.ProtocolFeatures, 0, 2, 256, 0);
        Cli.LibvirtHook.PinDifferences(profile, exact).Should().BeEmpty();
        var wider = new BackendCapabilities(VirtioDeviceType.Net, profile.Features | TestNetDevice.Parse("event_idx"), 0, 4, 1024, 0);
        Cli.LibvirtHook.PinDifferences(profile, wider).Should().Equal("offers event_idx beyond the profile", "serves 4 virtqueues, the profile 2", "accepts rings up to 1024, the profile 256");
    }
}
