using System.Text;
using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Tests.Compat;

public sealed class ProfileCatalogTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vhc-lock").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    internal static ProfileCatalog NetCatalog() => ProfileCatalog.Declare(VirtioDeviceType.Net, "org.example.vnet.v2",
        ("org.example.vnet.v1", "version_1=on,mrg_rxbuf=on,max_ring=256"),
        ("org.example.vnet.v2", "version_1=on,mrg_rxbuf=on,indirect_desc=on,event_idx=on,csum=on,host_tso4=on,host_tso6=on,max_ring=1024,mq=on,queues=4"));

    [Fact]
    public void Declared_catalog_resolves_ids_and_value_lists()
    {
        var c = NetCatalog();
        c.Latest.Id.Should().Be("org.example.vnet.v2");
        c.Profiles.Select(p => p.Id).Should().Equal("org.example.vnet.v1", "org.example.vnet.v2");
        c.Resolve("org.example.vnet.v1").MaxRingSize.Should().Be(256);
        c.Resolve("mrg_rxbuf=on,version_1=on").Id.Should().Be("org.example.vnet.v1", "a value list equal to a published profile keeps its id");
        c.Resolve("mrg_rxbuf=on").Id.Should().BeNull();
        var act = () => c.Resolve("org.example.vnet.v9");
        act.Should().Throw<ProfileFormatException>().WithMessage("*org.example.vnet.v9*supported: org.example.vnet.v1, org.example.vnet.v2*");
    }

    [Fact]
    public void Catalog_construction_is_validated()
    {
        var p = InterfaceProfile.Parse("type=net,mrg_rxbuf=on");
        FluentActions.Invoking(() => new ProfileCatalog(VirtioDeviceType.Net, [p], "x.y")).Should().Throw<ArgumentException>().WithMessage("*no id*");
        FluentActions.Invoking(() => new ProfileCatalog(VirtioDeviceType.Net, [p.WithId("a.b"), p.WithId("a.b")], "a.b")).Should().Throw<ArgumentException>().WithMessage("*twice*");
        FluentActions.Invoking(() => new ProfileCatalog(VirtioDeviceType.Block, [p.WithId("a.b")], "a.b")).Should().Throw<ArgumentException>().WithMessage("*net*block*");
        FluentActions.Invoking(() => new ProfileCatalog(VirtioDeviceType.Net, [p.WithId("a.b")], "a.c")).Should().Throw<ArgumentException>().WithMessage("*a.c*");
        FluentActions.Invoking(() => ProfileCatalog.Declare(VirtioDeviceType.Net, "a.b", ("a.b", "host_tso4=on")))
            .Should().Throw<ProfileFormatException>().WithMessage("*a.b*host_tso4 requires csum*");
    }

    [Fact]
    public void Every_profile_must_be_a_subset_of_the_device()
    {
        var c = NetCatalog();
        var small = new TestNetDevice(TestNetDevice.Parse("version_1,mrg_rxbuf"), queues: 2, maxQueueSize: 512);
        var problems = c.ValidateAgainst(small);
        problems.Should().HaveCount(3).And.OnlyContain(s => s.StartsWith("org.example.vnet.v2: ", StringComparison.Ordinal));
        problems[0].Should().Contain("csum,host_tso4,host_tso6,mq,indirect_desc,event_idx");
        var big = new TestNetDevice(TestNetDevice.Parse("version_1,mrg_rxbuf,indirect_desc,event_idx,csum,host_tso4,host_tso6,mq,guest_csum"), queues: 8);
        c.ValidateAgainst(big).Should().BeEmpty();
    }

    [Fact]
    public void Lock_round_trips_and_a_growing_catalog_passes()
    {
        var c = NetCatalog();
        string path = Path.Combine(_dir, "profiles.lock.json");
        ProfileLock.Update(path, c).Should().BeEmpty();
        var locked = ProfileLock.Load(path);
        locked.Profiles.Should().Equal(c.Profiles);
        locked.Latest.Should().Be("org.example.vnet.v2");
        ProfileLock.Verify(c, locked).Should().BeEmpty();

        var grown = ProfileCatalog.Declare(VirtioDeviceType.Net, "org.example.vnet.v3",
            ("org.example.vnet.v1", "version_1=on,mrg_rxbuf=on,max_ring=256"),
            ("org.example.vnet.v2", "version_1=on,mrg_rxbuf=on,indirect_desc=on,event_idx=on,csum=on,host_tso4=on,host_tso6=on,max_ring=1024,mq=on,queues=4"),
            ("org.example.vnet.v3", "version_1=on,mrg_rxbuf=on,max_ring=1024,packed=on"));
        var findings = ProfileLock.Verify(grown, locked);
        findings.Should().ContainSingle().Which.Should().Be(new LockFinding("org.example.vnet.v3", "added", "new profile org.example.vnet.v3 is not in the lock yet"));
        findings[0].IsError.Should().BeFalse();
        ProfileLock.Update(path, grown).Should().ContainSingle();
        ProfileLock.Load(path).Profiles.Should().HaveCount(3);
    }

    [Fact]
    public void Removed_or_changed_profiles_fail_and_the_lock_is_not_rewritten()
    {
        string path = Path.Combine(_dir, "profiles.lock.json");
        ProfileLock.Update(path, NetCatalog());
        byte[] before = File.ReadAllBytes(path);
        var shrunk = ProfileCatalog.Declare(VirtioDeviceType.Net, "org.example.vnet.v2",
            ("org.example.vnet.v2", "version_1=on,mrg_rxbuf=on,indirect_desc=on,event_idx=on,csum=on,host_tso4=on,max_ring=1024,mq=on,queues=4"));
        var findings = ProfileLock.Update(path, shrunk);
        findings.Select(f => (f.ProfileId, f.Kind)).Should().Equal(("org.example.vnet.v1", "removed"), ("org.example.vnet.v2", "changed"));
        findings[1].Message.Should().Contain("host_tso6 on -> off");
        File.ReadAllBytes(path).Should().Equal(before);
    }

    [Fact]
    public void Lock_file_text_is_stable()
    {
        string json = ProfileLock.FromCatalog(NetCatalog()).ToJson();
        json.Should().Be(ProfileLock.FromCatalog(NetCatalog()).ToJson());
        json.Should().Contain("\"format\": \"vhostcompat-profiles-lock\"").And.Contain("\"device-type\": \"net\"").And.EndWith("}\n");
        ProfileLock.Parse(Encoding.UTF8.GetBytes(json), "x").ToJson().Should().Be(json);
    }

    [Theory]
    [InlineData("", "malformed JSON")]
    [InlineData("[]", "not a JSON object")]
    [InlineData("{\"format\":\"other\"}", "format")]
    [InlineData("{\"format\":\"vhostcompat-profiles-lock\",\"version\":2}", "version")]
    [InlineData("{\"format\":\"vhostcompat-profiles-lock\",\"version\":1,\"device-type\":\"net\",\"latest\":\"a.b\",\"profiles\":[{\"id\":\"a.b\",\"canonical\":\"type=net,bogus=on\"}]}", "$.profiles[0].canonical")]
    [InlineData("{\"format\":\"vhostcompat-profiles-lock\",\"version\":1,\"device-type\":\"net\",\"latest\":\"a.c\",\"profiles\":[{\"id\":\"a.b\",\"canonical\":\"type=net\"}]}", "$.latest")]
    [InlineData("{\"format\":\"vhostcompat-profiles-lock\",\"version\":1,\"device-type\":\"net\",\"latest\":\"a.b\",\"profiles\":[{\"id\":\"a.b\",\"canonical\":\"type=net\"},{\"id\":\"a.b\",\"canonical\":\"type=net\"}]}", "$.profiles[1].id")]
    [InlineData("{\"format\":\"vhostcompat-profiles-lock\",\"version\":1,\"device-type\":\"net\",\"latest\":\"a.b\",\"profiles\":[{\"id\":\"a.b\",\"canonical\":7}]}", "$.profiles[0].canonical")]
    [InlineData("{\"format\":\"vhostcompat-profiles-lock\",\"version\":1,\"device-type\":\"net\",\"latest\":\"a.b\",\"profiles\":[],\"extra\":1}", "extra")]
    [InlineData("{\"format\":\"vhostcompat-profiles-lock\",\"version\":1,\"device-type\":\"net\",\"profiles\":[]}", "latest")]
    public void Bad_lock_files_name_the_file_and_field(string content, string field)
    {
        var act = () => ProfileLock.Parse(Encoding.UTF8.GetBytes(content), "profiles.lock.json");
        act.Should().Throw<CompatDocumentException>().Which.Message.Should().StartWith("profiles.lock.json: ").And.Contain(field);
    }
}
