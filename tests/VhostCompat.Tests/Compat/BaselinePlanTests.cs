using System.Text.Json;
using VhostCompat.Backend;
using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Tests.Compat;

/// <summary><c>vhost-compat profile baseline</c> and <c>vhost-compat plan</c>.</summary>
public sealed class BaselinePlanTests : IDisposable
{
    private static readonly VhostUserBackendOptions Options = new() { SocketPath = "/tmp/x.sock" };
    private readonly string _dir = Directory.CreateTempSubdirectory("vhc-plan").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static ProfileCatalog Catalog(int builds) => ProfileCatalog.Declare(VirtioDeviceType.Net, $"org.example.vnet.v{builds}",
        [.. new (string, string)[]
        {
            ("org.example.vnet.v1", "version_1=on,mrg_rxbuf=on,max_ring=256"),
            ("org.example.vnet.v2", "version_1=on,mrg_rxbuf=on,indirect_desc=on,max_ring=1024"),
            ("org.example.vnet.v3", "version_1=on,mrg_rxbuf=on,indirect_desc=on,event_idx=on,max_ring=1024"),
        }.Take(builds)]);

    private string Host(string dir, string name, string features, ProfileCatalog? catalog)
    {
        Directory.CreateDirectory(Path.Combine(_dir, dir));
        string path = Path.Combine(_dir, dir, name + ".json");
        File.WriteAllText(path, CapabilityDocument.Render(new TestNetDevice(TestNetDevice.Parse(features)), Options, catalog));
        return path;
    }

    private const string All = "version_1,mrg_rxbuf,indirect_desc,event_idx,mtu";

    [Fact]
    public async Task Baseline_is_the_newest_profile_every_host_carries()
    {
        string a = Host("caps", "a", All, Catalog(3));
        string b = Host("caps", "b", "version_1,mrg_rxbuf,indirect_desc,mtu", Catalog(2));
        string c = Host("caps", "c", All, Catalog(3));
        var (code, output, err) = await CliTests.Run("profile", "baseline", a, b, c);
        code.Should().Be(0, err);
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        lines[0].Should().Be("baseline org.example.vnet.v2");
        output.Should().Contain("newer: org.example.vnet.v3: " + b + ": ").And.Contain("event_idx");

        (code, output, _) = await CliTests.Run("profile", "baseline", "--json", a, b, c);
        code.Should().Be(0);
        using var doc = JsonDocument.Parse(output);
        doc.RootElement.GetProperty("baseline").GetProperty("id").GetString().Should().Be("org.example.vnet.v2");
        doc.RootElement.GetProperty("intersection-carried-by-all").GetBoolean().Should().BeTrue();
        doc.RootElement.GetProperty("intersection").GetProperty("values").GetProperty("event_idx").GetString().Should().Be("off");
    }

    [Fact]
    public async Task Different_catalogs_fall_back_to_the_value_list_intersection()
    {
        var other = ProfileCatalog.Declare(VirtioDeviceType.Net, "com.vendor.net.a", ("com.vendor.net.a", "version_1=on,indirect_desc=on,event_idx=on,csum=on,max_ring=512"));
        string a = Host("caps", "a", All, Catalog(3));
        string b = Host("caps", "b", "version_1,indirect_desc,event_idx,csum,mtu", other);
        var (code, output, err) = await CliTests.Run("profile", "baseline", a, b);
        code.Should().Be(1, err);
        output.Should().StartWith("baseline: no published profile fits every host\n");
        var intersection = output.Split('\n').Single(l => l.StartsWith("intersection", StringComparison.Ordinal));
        intersection.Should().StartWith("intersection: type=net,");
        var p = InterfaceProfile.Parse(intersection["intersection: ".Length..]);
        p.Features.Should().Be(TestNetDevice.Parse("version_1,indirect_desc,event_idx"));
        p.MaxRingSize.Should().Be(512);
    }

    [Fact]
    public async Task Baseline_refuses_mixed_device_types_and_no_arguments()
    {
        var (code, _, err) = await CliTests.Run("profile", "baseline");
        code.Should().Be(2);
        string blk = Path.Combine(_dir, "blk.json");
        File.WriteAllText(blk, CapabilityDocument.Render(new TestBlockDevice(VirtioFeatureBits.Version1), Options));
        (code, _, err) = await CliTests.Run("profile", "baseline", Host("caps", "a", All, Catalog(3)), blk);
        code.Should().Be(2);
        err.Should().Contain("describes a block backend");
    }

    private void Record(string name, string profileId, ProfileCatalog catalog)
    {
        Directory.CreateDirectory(Path.Combine(_dir, "records"));
        var p = catalog.Find(profileId)!;
        var r = new AckedStateRecord(name, VirtioDeviceType.Net, p.Features, 0, p, 2, new Dictionary<int, int> { [0] = 256, [1] = 256 }, []);
        File.WriteAllText(Path.Combine(_dir, "records", name + ".json"), r.ToJson());
    }

    [Fact]
    public async Task Plan_lists_the_destinations_of_every_record_as_text_json_and_html()
    {
        Host("caps", "host-new", All, Catalog(3));
        Host("caps", "host-old", "version_1,mrg_rxbuf,mtu", Catalog(1));
        Record("vm1.net0", "org.example.vnet.v1", Catalog(3));
        Record("vm2.net0", "org.example.vnet.v3", Catalog(3));
        string records = Path.Combine(_dir, "records"), caps = Path.Combine(_dir, "caps");

        var (code, output, err) = await CliTests.Run("plan", "--records", records, "--caps", caps);
        code.Should().Be(0, err);
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        lines[0].Should().MatchRegex(@"^record\s+profile\s+host-new\s+host-old$");
        lines[1].Should().MatchRegex(@"^vm1\.net0\s+org\.example\.vnet\.v1\s+yes\s+yes$");
        lines[2].Should().MatchRegex(@"^vm2\.net0\s+org\.example\.vnet\.v3\s+yes\s+no: .*features-unsupported");

        (code, output, _) = await CliTests.Run("plan", "--json", "--records", records, "--caps", caps);
        using var doc = JsonDocument.Parse(output);
        var rows = doc.RootElement.GetProperty("records").EnumerateArray().ToList();
        rows[1].GetProperty("destinations").EnumerateArray().Select(e => e.GetString()).Should().Equal("host-new");

        (code, output, _) = await CliTests.Run("plan", "--format", "html", "--records", records, "--caps", caps);
        output.Should().StartWith("<!DOCTYPE html>").And.Contain("<td class=\"no\">").And.NotContain("<script").And.NotContain("http");
    }

    [Fact]
    public async Task Plan_exits_1_when_a_record_has_no_destination_and_escapes_html()
    {
        Host("caps", "<b>old", "version_1,mrg_rxbuf,mtu", Catalog(1));
        Record("vm2.net0", "org.example.vnet.v3", Catalog(3));
        var (code, output, _) = await CliTests.Run("plan", "--records", Path.Combine(_dir, "records"), "--caps", Path.Combine(_dir, "caps"));
        code.Should().Be(1);
        output.Should().Contain("vm2.net0: no destination");
        (_, output, _) = await CliTests.Run("plan", "--format", "html", "--records", Path.Combine(_dir, "records"), "--caps", Path.Combine(_dir, "caps"));
        output.Should().Contain("&lt;b&gt;old").And.NotContain("<b>old");

        (code, _, var err) = await CliTests.Run("plan", "--records", Path.Combine(_dir, "nothing"), "--caps", Path.Combine(_dir, "caps"));
        code.Should().Be(2);
        err.Should().Be($"vhost-compat: --records {Path.Combine(_dir, "nothing")}: no such directory\n");
    }
}
