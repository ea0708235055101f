using System.Text;
using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Tests.Compat;

public sealed class AckedStateRecordTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vhc-rec").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    internal static AckedStateRecord NetRecord(string key = "vm-1234.net0", ulong? features = null) => new(
        key,
        VirtioDeviceType.Net,
        features ?? 0x170008000UL,
        0x1a009,
        ProfileCatalogTests.NetCatalog().Find("org.example.vnet.v1"),
        2,
        new Dictionary<int, int> { [0] = 256, [1] = 256 },
        [0x52, 0x54, 0, 0x12, 0x34, 0x56, 0, 0, 1, 0, 0xdc, 0x05]);

    /// <summary>A record file around <paramref name="payload"/> (exact text) with its checksum, as any SDK version writes it.</summary>
    internal static string Seal(string payload)
    {
        string sha = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes(payload)));
        return $"{{\"format\":\"vhostcompat-acked-state\",\"version\":1,\"sha256\":\"{sha}\",\"payload\":{payload}}}";
    }

    [Fact]
    public void Record_round_trips_through_the_store_with_a_generation_counter()
    {
        var store = new AckedStateStore(Path.Combine(_dir, "records"));
        store.Load("vm-1234.net0").Should().BeNull();
        var saved = store.Save(NetRecord());
        saved.Generation.Should().Be(1);
        var loaded = store.Load("vm-1234.net0")!;
        loaded.AckedFeatures.Should().Be(0x170008000UL);
        loaded.AckedProtocolFeatures.Should().Be(0x1a009);
        loaded.Profile!.Id.Should().Be("org.example.vnet.v1");
        loaded.Profile.SameInterface(ProfileCatalogTests.NetCatalog().Find("org.example.vnet.v1")).Should().BeTrue();
        loaded.QueueCount.Should().Be(2);
        loaded.QueueSizes.Should().BeEquivalentTo(new Dictionary<int, int> { [0] = 256, [1] = 256 });
        loaded.Config.ToArray().Should().Equal(NetRecord().Config.ToArray());
        loaded.SavedAt.Should().BeCloseTo(DateTimeOffset.UtcNow, TimeSpan.FromMinutes(1));
        store.Save(NetRecord()).Generation.Should().Be(2);
        Directory.GetFiles(store.Directory).Should().ContainSingle().Which.Should().EndWith("vm-1234.net0.json");
    }

    [Fact]
    public void Whether_the_profile_was_pinned_round_trips_and_records_older_than_the_field_count_as_pinned()
    {
        var r = NetRecord();
        var byDefault = new AckedStateRecord(r.Key, r.DeviceType, r.AckedFeatures, r.AckedProtocolFeatures, r.Profile, r.QueueCount, r.QueueSizes, r.Config.Span, profilePinned: false);
        string json = byDefault.ToJson();
        json.Should().Contain("\"profile-pinned\":false");
        AckedStateRecord.Parse(Encoding.UTF8.GetBytes(json), "r.json").ProfilePinned.Should().BeFalse();
        AckedStateRecord.Parse(Encoding.UTF8.GetBytes(r.ToJson()), "r.json").ProfilePinned.Should().BeTrue();

        // The same payload without the member, re-sealed as an SDK from before it would have written it.
        using var doc = System.Text.Json.JsonDocument.Parse(json);
        string old = Seal(doc.RootElement.GetProperty("payload").GetRawText().Replace(",\"profile-pinned\":false", "", StringComparison.Ordinal));
        old.Should().NotContain("profile-pinned");
        AckedStateRecord.Parse(Encoding.UTF8.GetBytes(old), "old.json").ProfilePinned.Should().BeTrue();
    }

    [Fact]
    public void File_shows_names_and_hex()
    {
        string json = NetRecord().ToJson();
        json.Should().Contain("\"format\": \"vhostcompat-acked-state\"").And.Contain("\"acked-features\":\"0x170008000\"")
            .And.Contain("\"mrg_rxbuf\",\"indirect_desc\",\"event_idx\",\"protocol_features\",\"version_1\"").And.Contain("\"config\":\"52540012345600000100dc05\"");
    }

    [Fact]
    public void Interrupted_save_leaves_the_previous_record_intact()
    {
        var store = new AckedStateStore(_dir);
        store.Save(NetRecord());
        byte[] before = File.ReadAllBytes(store.PathFor("vm-1234.net0"));
        var act = () => store.SaveCore(NetRecord(features: 0x170000000UL), _ => throw new IOException("power cut"));
        act.Should().Throw<IOException>();
        File.ReadAllBytes(store.PathFor("vm-1234.net0")).Should().Equal(before);
        Directory.GetFiles(_dir).Should().ContainSingle("the temp file is removed");
        store.Load("vm-1234.net0")!.AckedFeatures.Should().Be(0x170008000UL);
    }

    [Fact]
    public void A_leftover_temp_file_from_a_crash_is_ignored()
    {
        var store = new AckedStateStore(_dir);
        store.Save(NetRecord());
        File.WriteAllText(Path.Combine(_dir, ".vm-1234.net0.json.999.abc.tmp"), "{\"format\":");
        store.Load("vm-1234.net0")!.Generation.Should().Be(1);
    }

    [Fact]
    public void Every_single_byte_flip_or_truncation_is_detected()
    {
        byte[] good = Encoding.UTF8.GetBytes(NetRecord().ToJson());
        var undetected = new List<string>();
        for (int i = 0; i < good.Length; i++)
        {
            byte[] bad = (byte[])good.Clone();
            bad[i] ^= 0x01;
            if (char.IsWhiteSpace((char)good[i]) && char.IsWhiteSpace((char)bad[i]))
            {
                continue; // whitespace outside the payload is not content
            }

            if (!FailsWithNamedFile(bad))
            {
                undetected.Add($"flip at {i} ('{(char)good[i]}')");
            }
        }

        for (int len = 0; len < good.Length - 2; len += 3)
        {
            if (!FailsWithNamedFile(good.AsMemory(0, len)))
            {
                undetected.Add($"truncation at {len}");
            }
        }

        undetected.Should().BeEmpty();

        static bool FailsWithNamedFile(ReadOnlyMemory<byte> content)
        {
            try
            {
                AckedStateRecord.Parse(content, "rec.json");
                return false;
            }
            catch (AckedStateCorruptException ex)
            {
                return ex.Message.StartsWith("rec.json: ", StringComparison.Ordinal);
            }
        }
    }

    [Fact]
    public void Tampered_payload_with_recomputed_structure_fails_the_checksum()
    {
        string json = NetRecord().ToJson().Replace("\"queue-count\":2", "\"queue-count\":4", StringComparison.Ordinal);
        var act = () => AckedStateRecord.Parse(Encoding.UTF8.GetBytes(json), "rec.json");
        act.Should().Throw<AckedStateCorruptException>().Which.Field.Should().Be("sha256");
    }

    [Fact]
    public void A_damaged_stored_record_is_reported_and_never_replaced()
    {
        var store = new AckedStateStore(_dir);
        string path = store.PathFor("vm-1234.net0");
        File.WriteAllText(path, "{\"format\":\"vhostcompat-acked-state\",\"vers");
        var load = () => store.Load("vm-1234.net0");
        load.Should().Throw<AckedStateCorruptException>().Which.FileName.Should().Be(path);
        var save = () => store.Save(NetRecord());
        save.Should().Throw<AckedStateCorruptException>();
        File.ReadAllText(path).Should().Be("{\"format\":\"vhostcompat-acked-state\",\"vers");
    }

    [Fact]
    public void Unknown_version_fails_closed()
    {
        string json = NetRecord().ToJson().Replace("\"version\": 1", "\"version\": 2", StringComparison.Ordinal);
        var act = () => AckedStateRecord.Parse(Encoding.UTF8.GetBytes(json), "rec.json");
        act.Should().Throw<AckedStateCorruptException>().Which.Field.Should().Be("version");
    }

    [Fact]
    public void Record_in_another_file_name_is_refused()
    {
        var store = new AckedStateStore(_dir);
        store.Save(NetRecord());
        File.Move(store.PathFor("vm-1234.net0"), store.PathFor("vm-9999.net0"));
        var act = () => store.Load("vm-9999.net0");
        act.Should().Throw<AckedStateCorruptException>().WithMessage("*does not match*");
    }

    [Fact]
    public void Keys_are_validated_and_default_keys_derive_from_the_socket_path()
    {
        AckedStateStore.IsValidKey("vm-1234.net0").Should().BeTrue();
        AckedStateStore.IsValidKey("../etc/passwd").Should().BeFalse();
        AckedStateStore.IsValidKey(".hidden").Should().BeFalse();
        AckedStateStore.IsValidKey("a/b").Should().BeFalse();
        AckedStateStore.IsValidKey(new string('a', 201)).Should().BeFalse();
        string a = AckedStateStore.DefaultKey("/run/vm 1/vnet.sock");
        a.Should().MatchRegex("^sock-vnet\\.sock-[0-9a-f]{12}$");
        AckedStateStore.DefaultKey("/run/vm 1/vnet.sock").Should().Be(a);
        AckedStateStore.DefaultKey("/run/vm2/vnet.sock").Should().NotBe(a);
        AckedStateStore.IsValidKey(AckedStateStore.DefaultKey("/tmp/wéird name!.sock")).Should().BeTrue();
        FluentActions.Invoking(() => new AckedStateStore(_dir).PathFor("../x")).Should().Throw<ArgumentException>();
    }

    [Fact]
    public void Downgrade_is_detected_with_the_missing_bits_named()
    {
        var record = NetRecord(features: TestNetDevice.Parse("csum,host_tso4,host_tso6,mrg_rxbuf,version_1,protocol_features"));
        var older = new BackendCapabilities(VirtioDeviceType.Net, TestNetDevice.Parse("csum,mrg_rxbuf,version_1,protocol_features"), 0x1a009, 2, 1024, 12);
        var problems = record.CheckHonouredBy(older);
        problems.Should().ContainSingle().Which.Features.Should().Equal("host_tso4", "host_tso6");
        var same = new BackendCapabilities(VirtioDeviceType.Net, record.AckedFeatures, 0x1a009, 2, 1024, 12);
        record.CheckHonouredBy(same).Should().BeEmpty();
    }

    [Fact]
    public void Constructor_rejects_out_of_range_values()
    {
        FluentActions.Invoking(() => new AckedStateRecord("k", VirtioDeviceType.Net, 0, 0, null, 0, new Dictionary<int, int>(), [])).Should().Throw<ArgumentException>();
        FluentActions.Invoking(() => new AckedStateRecord("k", VirtioDeviceType.Net, 0, 0, null, 2, new Dictionary<int, int> { [2] = 256 }, [])).Should().Throw<ArgumentException>();
        FluentActions.Invoking(() => new AckedStateRecord("k", VirtioDeviceType.Net, 0, 0, null, 2, new Dictionary<int, int> { [0] = 65536 }, [])).Should().Throw<ArgumentException>();
        FluentActions.Invoking(() => new AckedStateRecord("k", VirtioDeviceType.Net, 0, 0, null, 2, new Dictionary<int, int>(), new byte[257])).Should().Throw<ArgumentException>();
    }
}
