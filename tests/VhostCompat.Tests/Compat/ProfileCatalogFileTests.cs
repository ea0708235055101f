using System.Text;
using VhostCompat.Compat;
using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.Tests.Compat;

public sealed class ProfileCatalogFileTests
{
    /// <summary>DPDK 22.11/24.11 vhost PMD, default devargs (tso=0): GET_FEATURES as probed.</summary>
    internal const ulong DpdkDefault = 0xd7c66e7cb;

    /// <summary>The same with tso=1: + host_tso4, host_tso6.</summary>
    internal const ulong DpdkTso = 0xd7c66ffcb;

    private static readonly DateOnly Day = new(2026, 12, 3);

    internal static BackendCapabilities DpdkOffer(ulong features) =>
        new(VirtioDeviceType.Net, features, 0x10cbf, queues: 254, maxQueueSize: 32768, configSize: 0, queueNumReply: 128);

    private static ProfileCatalog DpdkCatalog()
    {
        var old = ProfileCatalogFile.ProfileFromCapabilities(DpdkOffer(DpdkDefault), "org.dpdk.v22.11");
        var tso = ProfileCatalogFile.ProfileFromCapabilities(DpdkOffer(DpdkTso), "org.dpdk.v22.11.tso");
        return ProfileCatalogFile.Grow(ProfileCatalogFile.Grow(null, old, makeLatest: false), tso, makeLatest: false);
    }

    private static ProfileCatalog Parse(string json) => ProfileCatalogFile.Parse(Encoding.UTF8.GetBytes(json), "cat.json");

    private static string Minimal(string profiles = """[{"id":"org.x.a","canonical":"type=net,version_1=on"}]""", string top = "") =>
        $$"""{"format":"vhostcompat-catalog","version":1,"type":"net","latest":"org.x.a"{{top}},"profiles":{{profiles}}}""";

    [Fact]
    public void Render_and_parse_round_trip_profiles_order_latest_and_sources()
    {
        var catalog = ProfileCatalogFile.Grow(DpdkCatalog(), DpdkCatalog().Profiles[0].WithId("org.dpdk.v24.11"), makeLatest: true);
        var sources = new Dictionary<string, ProfileSource>
        {
            ["org.dpdk.v22.11"] = new("dpdk-testpmd 22.11.11", string.Empty, Day),
            ["org.dpdk.v22.11.tso"] = new("dpdk-testpmd 22.11.11", "tso=1", Day),
        };

        string text = ProfileCatalogFile.Render(catalog, sources);
        var (back, backSources) = ProfileCatalogFile.ParseWithSources(Encoding.UTF8.GetBytes(text), "cat.json");

        back.Profiles.Should().Equal(catalog.Profiles);
        back.Latest.Id.Should().Be("org.dpdk.v24.11");
        back.DeviceType.Should().Be(VirtioDeviceType.Net);
        backSources.Should().BeEquivalentTo(sources);
        backSources.Should().NotContainKey("org.dpdk.v24.11");
        ProfileCatalogFile.Render(back, backSources).Should().Be(text);
        text.Should().StartWith("{\n  \"format\": \"vhostcompat-catalog\",\n  \"version\": 1,\n  \"type\": \"net\",").And.EndWith("}\n");
        text.Should().Contain("\"probed\": \"2026-12-03\"").And.Contain("\"devargs\": \"tso=1\"");
    }

    [Fact]
    public void Save_then_load_gives_the_same_catalog()
    {
        string dir = Directory.CreateTempSubdirectory("vhc-catfile").FullName;
        try
        {
            string path = Path.Combine(dir, "c.json");
            ProfileCatalogFile.Save(path, DpdkCatalog());
            ProfileCatalogFile.Load(path).Profiles.Should().Equal(DpdkCatalog().Profiles);
            Directory.GetFiles(dir).Should().ContainSingle("the temp file was renamed over the target");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void A_canonical_form_is_read_by_value_so_a_short_value_list_loads()
    {
        var c = Parse(Minimal());
        c.Latest.Canonical.Should().StartWith("type=net,admin_vq=off,").And.Contain("version_1=on");
        c.Latest.Id.Should().Be("org.x.a");
    }

    [Theory]
    [InlineData("""{"format":"vhostcompat-profiles-lock","version":1}""", "$.format")]
    [InlineData("""{"format":"vhostcompat-catalog","version":2}""", "$.version")]
    [InlineData("""{"format":"vhostcompat-catalog","version":"1"}""", "$.version")]
    [InlineData("""[1]""", "$")]
    [InlineData("""{"format":"vhostcompat-catalog","version":1,"type":"net","latest":"org.x.a","profiles":[{"id":"org.x.a","canonical":"type=net"}],"extra":1}""", "$")]
    [InlineData("""{"format":"vhostcompat-catalog","version":1,"type":"disk","latest":"org.x.a","profiles":[{"id":"org.x.a","canonical":"type=net"}]}""", "$.type")]
    [InlineData("""{"format":"vhostcompat-catalog","version":1,"type":"net","latest":"org.x.a","profiles":[]}""", "$.profiles")]
    [InlineData("""{"format":"vhostcompat-catalog","version":1,"type":"net","profiles":[{"id":"org.x.a","canonical":"type=net"}]}""", "$")]
    [InlineData("""{"format":"vhostcompat-catalog","version":1,"type":"net","latest":"org.x.b","profiles":[{"id":"org.x.a","canonical":"type=net"}]}""", "$.latest")]
    [InlineData("""{"format":"vhostcompat-catalog","version":1,"type":"net","latest":"org.x.a","profiles":[{"id":"Org.X","canonical":"type=net"}]}""", "$.profiles[0].id")]
    [InlineData("""{"format":"vhostcompat-catalog","version":1,"type":"net","latest":"org.x.a","profiles":[{"id":"org.x.a","canonical":"type=net"},{"id":"org.x.a","canonical":"type=net"}]}""", "$.profiles[1].id")]
    [InlineData("""{"format":"vhostcompat-catalog","version":1,"type":"net","latest":"org.x.a","profiles":[{"id":"org.x.a","canonical":"type=block"}]}""", "$.profiles[0].canonical")]
    [InlineData("""{"format":"vhostcompat-catalog","version":1,"type":"net","latest":"org.x.a","profiles":[{"id":"org.x.a","canonical":"type=net,host_tso4=on"}]}""", "$.profiles[0].canonical")]
    [InlineData("""{"format":"vhostcompat-catalog","version":1,"type":"net","latest":"org.x.a","profiles":[{"id":"org.x.a","canonical":"type=net","colour":"red"}]}""", "$.profiles[0]")]
    [InlineData("""{"format":"vhostcompat-catalog","version":1,"type":"net","latest":"org.x.a","profiles":[{"id":"org.x.a","canonical":7}]}""", "$.profiles[0].canonical")]
    [InlineData("""{"format":"vhostcompat-catalog","version":1,"type":"net","latest":"org.x.a","profiles":[{"id":"org.x.a","canonical":"type=net","source":{"backend":"","probed":"2026-12-03"}}]}""", "$.profiles[0].source.backend")]
    [InlineData("""{"format":"vhostcompat-catalog","version":1,"type":"net","latest":"org.x.a","profiles":[{"id":"org.x.a","canonical":"type=net","source":{"backend":"x\ny","probed":"2026-12-03"}}]}""", "$.profiles[0].source.backend")]
    [InlineData("""{"format":"vhostcompat-catalog","version":1,"type":"net","latest":"org.x.a","profiles":[{"id":"org.x.a","canonical":"type=net","source":{"backend":"x","devargs":"a\tb","probed":"2026-12-03"}}]}""", "$.profiles[0].source.devargs")]
    [InlineData("""{"format":"vhostcompat-catalog","version":1,"type":"net","latest":"org.x.a","profiles":[{"id":"org.x.a","canonical":"type=net","source":{"backend":"x","probed":"3.12.2026"}}]}""", "$.profiles[0].source.probed")]
    [InlineData("""{"format":"vhostcompat-catalog","version":1,"type":"net","latest":"org.x.a","profiles":[{"id":"org.x.a","canonical":"type=net","source":{"backend":"x"}}]}""", "$.profiles[0].source")]
    [InlineData("""{"format":"vhostcompat-catalog","version":1,"type":"net","latest":"org.x.a","profiles":[{"id":"org.x.a","canonical":"type=net","source":{"backend":"x","probed":"2026-12-03","by":"me"}}]}""", "$.profiles[0].source")]
    public void Malformed_files_fail_naming_the_file_and_field(string json, string field)
    {
        var act = () => Parse(json);
        var ex = act.Should().Throw<CompatDocumentException>().Which;
        ex.FileName.Should().Be("cat.json");
        ex.Field.Should().StartWith(field);
        ex.Message.Should().StartWith("cat.json: ");
    }

    [Fact]
    public void Malformed_json_and_a_missing_file_fail_cleanly()
    {
        var act = () => Parse("{\"format\":");
        act.Should().Throw<CompatDocumentException>().Which.Message.Should().Contain("malformed JSON");
        var load = () => ProfileCatalogFile.Load("/nonexistent/catalog.json");
        load.Should().Throw<IOException>();
    }

    [Fact]
    public void Grow_adds_new_ids_keeps_same_values_and_refuses_changed_values_naming_the_keys()
    {
        var catalog = DpdkCatalog();
        catalog.Profiles.Select(p => p.Id).Should().Equal("org.dpdk.v22.11", "org.dpdk.v22.11.tso");
        catalog.Latest.Id.Should().Be("org.dpdk.v22.11", "the first profile of a new catalog is its latest");

        // Same id, same values: nothing changes (the same object comes back).
        var again = ProfileCatalogFile.ProfileFromCapabilities(DpdkOffer(DpdkDefault), "org.dpdk.v22.11");
        ProfileCatalogFile.Grow(catalog, again, makeLatest: false).Should().BeSameAs(catalog);
        var tsoLatest = ProfileCatalogFile.Grow(catalog, catalog.Profiles[1], makeLatest: true);
        tsoLatest.Latest.Id.Should().Be("org.dpdk.v22.11.tso");
        tsoLatest.Profiles.Should().Equal(catalog.Profiles);

        // Same id, other values: refused, the message names each key with the published value first.
        var changed = ProfileCatalogFile.ProfileFromCapabilities(DpdkOffer(DpdkTso), "org.dpdk.v22.11");
        var act = () => ProfileCatalogFile.Grow(catalog, changed, makeLatest: false);
        act.Should().Throw<InvalidOperationException>()
            .WithMessage("profile org.dpdk.v22.11 is published with other values (host_tso4 off -> on, host_tso6 off -> on); catalogs only grow: publish a new id");

        // Another device type, or no id.
        var blk = InterfaceProfile.Parse("type=block,flush=on").WithId("org.x.blk");
        FluentActions.Invoking(() => ProfileCatalogFile.Grow(catalog, blk, false)).Should().Throw<ArgumentException>().WithMessage("*is for block, the catalog for net*");
        FluentActions.Invoking(() => ProfileCatalogFile.Grow(catalog, blk.WithId(null), false)).Should().Throw<ArgumentException>().WithMessage("*needs an id*");

        // A new id moves latest only when asked.
        var grown = ProfileCatalogFile.Grow(catalog, again.WithId("org.dpdk.v24.11"), makeLatest: false);
        grown.Latest.Id.Should().Be("org.dpdk.v22.11");
        grown.Profiles.Should().HaveCount(3);
    }

    [Fact]
    public void Render_refuses_a_source_for_an_unknown_id()
    {
        var act = () => ProfileCatalogFile.Render(DpdkCatalog(), new Dictionary<string, ProfileSource> { ["org.x.gone"] = new("x", null, Day) });
        act.Should().Throw<ArgumentException>().WithMessage("*org.x.gone*");
        FluentActions.Invoking(() => new ProfileSource("", null, Day)).Should().Throw<ArgumentException>();
        FluentActions.Invoking(() => new ProfileSource("x", "a\nb", Day)).Should().Throw<ArgumentException>();
    }

    [Fact]
    public void A_probed_DPDK_offer_becomes_its_interface_without_vhost_only_bits()
    {
        var p = ProfileCatalogFile.ProfileFromCapabilities(DpdkOffer(DpdkDefault), "org.dpdk.v22.11");
        p.Features.Should().Be(DpdkDefault & ~VirtioFeatures.VhostOnlyMask);
        p.MaxRingSize.Should().Be(32768);
        p.Queues.Should().Be(254);
        p.Mtu.Should().BeNull("DPDK offers the mtu bit but no config space");
        p.DeviceState.Should().BeFalse("the offer has no DEVICE_STATE");
        p.Canonical.Should().Contain("host_ecn=on").And.Contain("host_tso4=off").And.Contain("device_state=off");
    }

    [Fact]
    public void Config_values_are_pinned_where_the_feature_is_offered_but_capacity_is_not()
    {
        var blk = new BackendCapabilities(VirtioDeviceType.Block, VirtioFeatures.Parse(VirtioDeviceType.Block, "blk_size,flush,mq,version_1"),
            (ulong)(VhostUserProtocolFeatures.Config | VhostUserProtocolFeatures.DeviceState), queues: 4, maxQueueSize: 1000, configSize: 60,
            config: new Dictionary<string, string> { ["blk_size"] = "4096", ["capacity"] = "131072" });
        var p = ProfileCatalogFile.ProfileFromCapabilities(blk, null);
        p.BlockSize.Should().Be(4096);
        p.Capacity.Should().BeNull("the capacity is the disk's size, not the backend's");
        p.MaxRingSize.Should().Be(512, "the largest power of two the backend accepts");
        p.Queues.Should().Be(4);
        p.DeviceState.Should().BeTrue();

        var net = new BackendCapabilities(VirtioDeviceType.Net, VirtioFeatures.Parse(VirtioDeviceType.Net, "mtu,version_1"), 0, queues: 8, maxQueueSize: 256, configSize: 12,
            config: new Dictionary<string, string> { ["mtu"] = "9000" });
        var n = ProfileCatalogFile.ProfileFromCapabilities(net, "org.x.n");
        n.Mtu.Should().Be(9000);
        n.Queues.Should().Be(2, "without mq a net device has one queue pair");
    }
}
