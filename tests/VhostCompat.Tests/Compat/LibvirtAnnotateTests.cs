using System.Text;
using System.Xml.Linq;
using VhostCompat.Backend;
using VhostCompat.Cli;
using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Tests.Compat;

/// <summary><c>vhost-compat libvirt annotate</c> and the metadata it writes.</summary>
public sealed class LibvirtAnnotateTests : IDisposable
{
    internal const string Domain = """
        <domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
          <name>vm1</name>
          <uuid>0b0e6e0a-6b55-4b1a-9d1c-0123456789ab</uuid>
          <!-- operator's comment -->
          <memory unit='MiB'>256</memory>
          <devices>
            <interface type='vhostuser'>
              <mac address='52:54:00:12:34:56'/>
              <source type='unix' path='/run/vnet/vm1.net0.sock' mode='client'/>
              <model type='virtio'/>
              <alias name='ua-net0'/>
            </interface>
            <interface type='vhostuser'>
              <mac address='52:54:00:AA:BB:CC'/>
              <source type='unix' path='/run/vnet/vm1.net1.sock' mode='server'/>
              <model type='virtio'/>
            </interface>
            <interface type='network'><source network='default'/></interface>
            <disk type='vhostuser' device='disk'>
              <driver name='qemu' type='raw'/>
              <source type='unix' path='/run/vblk/vm1.vdb.sock'/>
              <target dev='vdb' bus='virtio'/>
            </disk>
          </devices>
          <qemu:commandline><qemu:arg value='-nodefaults'/></qemu:commandline>
        </domain>
        """;

    private readonly string _dir = Directory.CreateTempSubdirectory("vhc-libvirt").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    internal string Write(string name, string content)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllText(path, content);
        return path;
    }

    internal string NetCaps() => Write("caps.json", CapabilityDocument.Render(
        new TestNetDevice(TestNetDevice.Parse("version_1,mrg_rxbuf,indirect_desc,event_idx,csum,host_tso4,host_tso6,mq,mtu"), queues: 8),
        new VhostUserBackendOptions { SocketPath = "/tmp/x.sock" }, ProfileCatalogTests.NetCatalog()));

    /// <summary>The document without the VhostCompat element (and the whitespace around it), for comparing the rest.</summary>
    private static XElement WithoutOurs(string xml)
    {
        var root = XElement.Parse(xml);
        root.Descendants().Where(e => e.Name.NamespaceName == LibvirtDomainXml.Namespace && e.Parent?.Name == "metadata").Remove();
        root.Elements("metadata").Where(m => !m.HasElements).Remove();
        return root;
    }

    [Fact]
    public async Task Annotate_writes_profile_and_key_for_every_net_device_and_leaves_the_rest_alone()
    {
        var (code, output, err) = await CliTests.Run("libvirt", "annotate", "--caps", NetCaps(), "--profile", "org.example.vnet.v1", Write("vm1.xml", Domain));
        code.Should().Be(0, err);
        err.Should().BeEmpty();
        var doc = XDocument.Parse(output);
        var ours = doc.Root!.Element("metadata")!.Element(XName.Get("devices", LibvirtDomainXml.Namespace))!;
        ours.Attribute("version")!.Value.Should().Be("1");
        var entries = ours.Elements().ToList();
        entries.Should().HaveCount(2, "both vhost-user interfaces, not the disk (a block profile) nor the network interface");
        entries[0].Attribute("mac")!.Value.Should().Be("52:54:00:12:34:56");
        entries[0].Attribute("key")!.Value.Should().Be(AckedStateStore.DefaultKey("/run/vnet/vm1.net0.sock"));
        entries[1].Attribute("mac")!.Value.Should().Be("52:54:00:aa:bb:cc");
        var profile = entries[0].Element(XName.Get("profile", LibvirtDomainXml.Namespace))!;
        profile.Attribute("id")!.Value.Should().Be("org.example.vnet.v1");
        profile.Value.Should().Be(ProfileCatalogTests.NetCatalog().Find("org.example.vnet.v1")!.Canonical);

        XNode.DeepEquals(WithoutOurs(output), XElement.Parse(Domain)).Should().BeTrue("everything but the metadata element is unchanged");
        output.Should().Contain("<!-- operator's comment -->");
    }

    [Fact]
    public async Task Annotate_is_idempotent_and_replaces_its_own_entry()
    {
        var caps = NetCaps();
        var (_, once, _) = await CliTests.Run("libvirt", "annotate", "--caps", caps, Write("a.xml", Domain));
        var (_, twice, _) = await CliTests.Run("libvirt", "annotate", "--caps", caps, Write("b.xml", once));
        twice.Should().Be(once);

        // Re-pin one device: its entry changes in place, the other stays.
        var (code, repinned, err) = await CliTests.Run("libvirt", "annotate", "--caps", caps, "--profile", "org.example.vnet.v1", "--device", "52:54:00:12:34:56", Write("c.xml", once));
        code.Should().Be(0, err);
        var entries = LibvirtDomainXml.Annotations(LibvirtDomainXml.Load(Encoding.UTF8.GetBytes(repinned), "x"));
        entries.Should().HaveCount(2);
        entries[0].Profile.Id.Should().Be("org.example.vnet.v1");
        entries[1].Profile.Id.Should().Be("org.example.vnet.v2");
        Regex(repinned, "<vhostcompat:devices").Should().Be(1);
    }

    private static int Regex(string s, string what) => s.Split(what).Length - 1;

    [Fact]
    public async Task Annotate_from_a_record_takes_its_key_and_profile_and_needs_one_device()
    {
        var profile = ProfileCatalogTests.NetCatalog().Find("org.example.vnet.v2")!;
        var record = new AckedStateRecord("vm1.net0", VirtioDeviceType.Net, profile.Features, 0, profile, 2, new Dictionary<int, int> { [0] = 256, [1] = 256 }, []);
        string path = Write("vm1.net0.json", record.ToJson());
        var (code, _, err) = await CliTests.Run("libvirt", "annotate", "--record", path, Write("d.xml", Domain));
        code.Should().Be(2);
        err.Should().Contain("2 vhost-user net devices").And.Contain("--device");
        err.Split('\n', StringSplitOptions.RemoveEmptyEntries).Should().HaveCount(1);

        (code, var output, err) = await CliTests.Run("libvirt", "annotate", "--record", path, "--device", "ua-net0", Write("e.xml", Domain));
        code.Should().Be(0, err);
        var entry = LibvirtDomainXml.Annotations(LibvirtDomainXml.Load(Encoding.UTF8.GetBytes(output), "x")).Single();
        entry.Key.Should().Be("vm1.net0");
        entry.Profile.SameInterface(profile).Should().BeTrue();
    }

    [Fact]
    public async Task Domain_without_metadata_gets_one_and_a_domain_without_devices_is_refused()
    {
        var (code, output, _) = await CliTests.Run("libvirt", "annotate", "--caps", NetCaps(), Write("f.xml", Domain));
        code.Should().Be(0);
        output.IndexOf("<metadata>", StringComparison.Ordinal).Should().BeGreaterThan(output.IndexOf("</uuid>", StringComparison.Ordinal));

        (code, _, var err) = await CliTests.Run("libvirt", "annotate", "--caps", NetCaps(), Write("g.xml", "<domain type='kvm'><name>x</name><devices/></domain>"));
        code.Should().Be(2);
        err.Should().Be("vhost-compat: the domain has no vhost-user interface for a net profile (0 vhost-user device(s) in all)\n");
    }

    [Theory]
    [InlineData("<!DOCTYPE domain [<!ENTITY x 'y'>]><domain><name>&x;</name></domain>", "DTD")]
    [InlineData("<!DOCTYPE domain SYSTEM 'file:///etc/passwd'><domain/>", "DTD")]
    [InlineData("<domain><name>x</domain>", "not well-formed")]
    [InlineData("<network><name>x</name></network>", "not a libvirt domain")]
    [InlineData("<domain><metadata><v:devices xmlns:v='https://vhostcompat.org/xmlns/libvirt/2'/></metadata></domain>", "is not one this tool reads")]
    [InlineData("<domain><metadata><v:devices xmlns:v='https://vhostcompat.org/xmlns/libvirt/1' version='7'/></metadata></domain>", "version '7'")]
    [InlineData("<domain><metadata><v:devices xmlns:v='https://vhostcompat.org/xmlns/libvirt/1'><v:device kind='interface' mac='52:54:00:00:00:01' key='k'/></v:devices></metadata></domain>", "has no <vhostcompat:profile>")]
    [InlineData("<domain><metadata><v:devices xmlns:v='https://vhostcompat.org/xmlns/libvirt/1'><v:device kind='interface' mac='52:54:00:00:00:01' key='k'><v:profile>nonsense=on</v:profile></v:device></v:devices></metadata></domain>", "the profile of key 'k'")]
    [InlineData("<domain><metadata><undeclared:x/></metadata></domain>", "not well-formed")]
    public void Hostile_or_malformed_XML_is_refused_with_one_line(string xml, string expected)
    {
        var act = () => LibvirtDomainXml.Annotations(LibvirtDomainXml.Load(Encoding.UTF8.GetBytes(xml), "in.xml"));
        act.Should().Throw<CliException>().Which.Message.Should().Contain(expected);
    }

    [Fact]
    public async Task Huge_input_is_refused_before_parsing()
    {
        var huge = "<domain><name>" + new string('a', LibvirtDomainXml.MaxBytes) + "</name></domain>";
        var (code, output, err) = await CliTests.Run("libvirt", "annotate", "--caps", NetCaps(), Write("huge.xml", huge));
        code.Should().Be(2);
        output.Should().BeEmpty();
        err.Should().Contain("larger than 4194304 bytes");
    }

    [Fact]
    public async Task Bad_arguments_give_one_line_and_exit_2()
    {
        var xml = Write("h.xml", Domain);
        foreach (var args in new[]
        {
            new[] { "libvirt", "annotate", xml },
            ["libvirt", "annotate", "--caps", NetCaps(), "--record", "r.json", xml],
            ["libvirt", "annotate", "--caps", NetCaps(), "--profile", "org.example.vnet.v9", xml],
            ["libvirt", "annotate", "--caps", NetCaps(), "--device", "52:54:00:99:99:99", xml],
            ["libvirt", "annotate", "--caps", NetCaps(), "--key", "bad/key", "--device", "ua-net0", xml],
            ["libvirt", "annotate", "--caps", NetCaps(), Path.Combine(_dir, "missing.xml")],
        })
        {
            var (code, output, err) = await CliTests.Run(args);
            code.Should().Be(2, string.Join(' ', args));
            output.Should().BeEmpty();
            err.Split('\n', StringSplitOptions.RemoveEmptyEntries).Should().HaveCount(1, err);
            err.Should().StartWith("vhost-compat: ").And.NotContain("   at ");
        }
    }

    [Fact]
    public void Capability_document_lists_its_profiles_as_feature_strings_and_the_parser_checks_them()
    {
        string json = File.ReadAllText(NetCaps());
        using var doc = System.Text.Json.JsonDocument.Parse(json);
        doc.RootElement.GetProperty("features").EnumerateArray().Select(e => e.GetString())
            .Should().Equal("vhostcompat-profile:org.example.vnet.v1", "vhostcompat-profile:org.example.vnet.v2");
        CapabilityDocument.Parse(Encoding.UTF8.GetBytes(json), "caps.json").Catalog!.Profiles.Should().HaveCount(2);

        var foreign = json.Replace("\"vhostcompat-profile:org.example.vnet.v1\"", "\"read-only\"", StringComparison.Ordinal);
        CapabilityDocument.Parse(Encoding.UTF8.GetBytes(foreign), "caps.json").Catalog.Should().NotBeNull("other feature strings pass");
        var unknown = json.Replace("vhostcompat-profile:org.example.vnet.v1", "vhostcompat-profile:org.example.vnet.v9", StringComparison.Ordinal);
        var act = () => CapabilityDocument.Parse(Encoding.UTF8.GetBytes(unknown), "caps.json");
        act.Should().Throw<CompatDocumentException>().WithMessage("*features[0]*org.example.vnet.v9*");
    }
}
