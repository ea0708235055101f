using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using VhostCompat.Backend;
using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Tests.Compat;

public class CapabilityDocumentTests
{
    private static readonly VhostUserBackendOptions Options = new() { SocketPath = "/tmp/x.sock" };

    private static TestNetDevice Device() =>
        new(TestNetDevice.Parse("version_1,mrg_rxbuf,indirect_desc,event_idx,csum,host_tso4,host_tso6,mq,mtu"), queues: 8, mtu: 9000);

    [Fact]
    public void Rendered_document_carries_features_limits_config_and_catalog()
    {
        string json = CapabilityDocument.Render(Device(), Options, ProfileCatalogTests.NetCatalog());
        using var doc = JsonDocument.Parse(json);
        var root = doc.RootElement;
        root.GetProperty("type").GetString().Should().Be("net");
        root.GetProperty("features").EnumerateArray().Select(e => e.GetString()).Should().Equal("vhostcompat-profile:org.example.vnet.v1", "vhostcompat-profile:org.example.vnet.v2");
        var vc = root.GetProperty("vhostcompat");
        vc.GetProperty("schema-version").GetInt32().Should().Be(2);
        vc.GetProperty("virtio-feature-names").EnumerateArray().Select(e => e.GetString()).Should()
            .Equal("csum", "mtu", "host_tso4", "host_tso6", "mrg_rxbuf", "mq", "log_all", "indirect_desc", "event_idx", "protocol_features", "version_1");
        vc.GetProperty("protocol-feature-names").EnumerateArray().Select(e => e.GetString()).Should().Contain(["mq", "reply_ack", "mtu", "status"]);
        vc.GetProperty("queues").GetInt32().Should().Be(8);
        vc.GetProperty("queue-num-reply").GetInt32().Should().Be(4);
        vc.GetProperty("config").GetProperty("mtu").GetString().Should().Be("9000");
        vc.GetProperty("profiles").GetProperty("latest").GetString().Should().Be("org.example.vnet.v2");
        vc.GetProperty("profiles").GetProperty("supported")[0].GetProperty("canonical").GetString().Should().StartWith("type=net,");
    }

    [Fact]
    public void Render_parse_round_trip()
    {
        var device = Device();
        string json = CapabilityDocument.Render(device, Options, ProfileCatalogTests.NetCatalog());
        var caps = CapabilityDocument.Parse(Encoding.UTF8.GetBytes(json), "caps.json");
        caps.DeviceType.Should().Be(VirtioDeviceType.Net);
        caps.VirtioFeatures.Should().Be(device.DeviceFeatures | VirtioFeatureBits.ProtocolFeatures | VirtioFeatureBits.LogAll);
        caps.Queues.Should().Be(8);
        caps.MaxQueueSize.Should().Be(1024);
        caps.Config.Should().ContainKey("mtu").WhoseValue.Should().Be("9000");
        caps.Catalog!.Profiles.Should().Equal(ProfileCatalogTests.NetCatalog().Profiles);
        CapabilityDocument.Render(caps).Should().Be(json);
    }

    [Fact]
    public void Existing_two_argument_render_still_works_without_a_catalog()
    {
        string json = CapabilityDocument.Render(Device(), Options);
        json.Should().NotContain("\"profiles\"");
        CapabilityDocument.Parse(Encoding.UTF8.GetBytes(json), "x").Catalog.Should().BeNull();
    }

    [Fact]
    public void A_catalog_the_device_cannot_honour_is_refused()
    {
        var small = new TestNetDevice(TestNetDevice.Parse("version_1,mrg_rxbuf"));
        var act = () => CapabilityDocument.Render(small, Options, ProfileCatalogTests.NetCatalog());
        act.Should().Throw<ArgumentException>().WithMessage("*org.example.vnet.v2*");
    }

    [Fact]
    public void Pinned_capabilities_follow_the_profile()
    {
        var device = Device();
        var v1 = ProfileCatalogTests.NetCatalog().Find("org.example.vnet.v1")!;
        var caps = BackendCapabilities.FromDevice(device, Options, null, v1);
        caps.VirtioFeatures.Should().Be(v1.Features | VirtioFeatureBits.ProtocolFeatures | VirtioFeatureBits.LogAll);
        caps.Queues.Should().Be(2);
        caps.QueueNumReply.Should().Be(1);
        caps.MaxQueueSize.Should().Be(256);
    }

    [Fact]
    public void Version_1_documents_from_the_previous_sdk_are_read()
    {
        const string v1 = """
            {"type":"net","features":[],"vhostcompat":{"schema-version":1,"device-id":1,"virtio-features":"0x170008000",
             "protocol-features":"0x1a009","queues":2,"max-queue-size":1024,"config-size":0,"max-memory-slots":32}}
            """;
        var caps = CapabilityDocument.Parse(Encoding.UTF8.GetBytes(v1), "old.json");
        caps.VirtioFeatures.Should().Be(0x170008000UL);
        caps.ProtocolFeatures.Should().Be(0x1a009UL);
    }

    public static TheoryData<string, string> BadDocuments() => new()
    {
        { "{", "malformed JSON" },
        { "{\"type\":\"net\",\"features\":[]}", "$.vhostcompat" },
        { Mutate(v => v["schema-version"] = 3), "schema-version" },
        { Mutate(v => v["queues"] = 0), "$.vhostcompat.queues" },
        { Mutate(v => v["queues"] = "2"), "$.vhostcompat.queues" },
        { Mutate(v => v["queues"] = 99999999999L), "$.vhostcompat.queues" },
        { Mutate(v => v["max-queue-size"] = 65536), "max-queue-size" },
        { Mutate(v => v["virtio-features"] = "170008000"), "virtio-features" },
        { Mutate(v => v["virtio-features"] = "0x1ffffffffffffffff"), "virtio-features" },
        { Mutate(v => v["virtio-feature-names"] = new System.Text.Json.Nodes.JsonArray("csum")), "virtio-feature-names" },
        { Mutate(v => v["protocol-feature-names"] = new System.Text.Json.Nodes.JsonArray()), "protocol-feature-names" },
        { Mutate(v => v["device-id"] = 2), "$.type" },
        { Mutate(v => v["surprise"] = 1), "surprise" },
        { Mutate(v => v.Remove("config-size")), "config-size" },
        { Mutate(v => v["config"]!["mtu"] = "-1"), "$.vhostcompat.config" },
        { Mutate(v => v["config"]!["mtu"] = 1500), "$.vhostcompat.config" },
        { Mutate(v => v["profiles"]!["latest"] = "org.example.vnet.v9"), "profiles" },
        { Mutate(v => v["profiles"]!["supported"]![0]!["canonical"] = "type=net,host_tso4=on"), "$.vhostcompat.profiles.supported[0].canonical" },
    };

    [Theory]
    [MemberData(nameof(BadDocuments))]
    public void Bad_documents_fail_naming_the_file_and_field(string json, string field)
    {
        var act = () => CapabilityDocument.Parse(Encoding.UTF8.GetBytes(json), "dst-caps.json");
        act.Should().Throw<CompatDocumentException>().Which.Message.Should().StartWith("dst-caps.json: ").And.Contain(field);
    }

    [Fact]
    public void Oversized_and_deeply_nested_documents_are_refused_before_use()
    {
        var huge = new byte[(1 << 20) + 1];
        Array.Fill(huge, (byte)' ');
        FluentActions.Invoking(() => CapabilityDocument.Parse(huge, "big.json")).Should().Throw<CompatDocumentException>().WithMessage("big.json: *more than*");

        string deep = "{\"type\":\"net\",\"features\":[],\"x\":" + new string('[', 100) + new string(']', 100) + "}";
        FluentActions.Invoking(() => CapabilityDocument.Parse(Encoding.UTF8.GetBytes(deep), "deep.json")).Should().Throw<CompatDocumentException>().WithMessage("deep.json: *");

        string path = Path.Combine(Path.GetTempPath(), $"vhc-big-{Guid.NewGuid():N}.json");
        File.WriteAllBytes(path, huge);
        try
        {
            FluentActions.Invoking(() => CapabilityDocument.Load(path)).Should().Throw<CompatDocumentException>().Which.FileName.Should().Be(path);
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static string Mutate(Action<System.Text.Json.Nodes.JsonObject> change)
    {
        var node = System.Text.Json.Nodes.JsonNode.Parse(CapabilityDocument.Render(Device(), Options, ProfileCatalogTests.NetCatalog()))!;
        change(node["vhostcompat"]!.AsObject());
        return node.ToJsonString();
    }

    [Fact]
    public void Rendered_documents_validate_against_the_documented_schema()
    {
        using var schema = JsonDocument.Parse(File.ReadAllText(FindRepoFile("docs/capabilities.schema.json")));
        foreach (string json in new[]
        {
            CapabilityDocument.Render(Device(), Options, ProfileCatalogTests.NetCatalog()),
            CapabilityDocument.Render(Device(), Options),
            CapabilityDocument.Render(CapabilityDocument.Parse(Encoding.UTF8.GetBytes(CapabilityDocument.Render(Device(), Options)), "caps.json").WithFrontend(QemuCapture.Host())),
            CapabilityDocument.Render(new TestBlockDevice(VirtioFeatures.Parse(VirtioDeviceType.Block, "flush,blk_size,mq,version_1")), Options),
        })
        {
            using var doc = JsonDocument.Parse(json);
            var errors = new List<string>();
            MiniSchema.Validate(schema.RootElement, schema.RootElement, doc.RootElement, "$", errors);
            errors.Should().BeEmpty();
        }

        // The validator itself notices a missing required key and an unknown member.
        using var broken = JsonDocument.Parse(Mutate(v => { v.Remove("queues"); v["extra"] = 1; }));
        var found = new List<string>();
        MiniSchema.Validate(schema.RootElement, schema.RootElement, broken.RootElement, "$", found);
        found.Should().Contain(e => e.Contains("queues", StringComparison.Ordinal)).And.Contain(e => e.Contains("extra", StringComparison.Ordinal));

        // ... and a frontend the SDK would refuse: a bad name, too many machine types.
        using var badFrontend = JsonDocument.Parse(Mutate(v => v["frontend"] = new System.Text.Json.Nodes.JsonObject
        {
            ["product"] = "qemu",
            ["product-version"] = "7.2 rc1",
            ["machines"] = new System.Text.Json.Nodes.JsonArray([.. Enumerable.Range(0, 513).Select(i => (System.Text.Json.Nodes.JsonNode?)$"m{i}")]),
        }));
        found.Clear();
        MiniSchema.Validate(schema.RootElement, schema.RootElement, badFrontend.RootElement, "$", found);
        found.Should().Contain(e => e.Contains("product-version", StringComparison.Ordinal)).And.Contain(e => e.Contains("machines: more than 512", StringComparison.Ordinal));
    }

    internal static string FindRepoFile(string relative)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, relative);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        throw new FileNotFoundException(relative);
    }

    /// <summary>The subset of JSON Schema the documented schema uses: type, required, properties, additionalProperties, items, maxItems, pattern, minimum, maximum, maxLength, $ref.</summary>
    private static class MiniSchema
    {
        public static void Validate(JsonElement root, JsonElement schema, JsonElement value, string path, List<string> errors)
        {
            if (schema.TryGetProperty("$ref", out var r))
            {
                string name = r.GetString()!["#/$defs/".Length..];
                Validate(root, root.GetProperty("$defs").GetProperty(name), value, path, errors);
                return;
            }

            if (schema.TryGetProperty("type", out var type))
            {
                bool ok = type.GetString() switch
                {
                    "object" => value.ValueKind == JsonValueKind.Object,
                    "array" => value.ValueKind == JsonValueKind.Array,
                    "string" => value.ValueKind == JsonValueKind.String,
                    "integer" => value.ValueKind == JsonValueKind.Number && value.TryGetInt64(out _),
                    _ => false,
                };
                if (!ok)
                {
                    errors.Add($"{path}: not {type.GetString()}");
                    return;
                }
            }

            if (value.ValueKind == JsonValueKind.Object)
            {
                if (schema.TryGetProperty("required", out var req))
                {
                    foreach (var k in req.EnumerateArray())
                    {
                        if (!value.TryGetProperty(k.GetString()!, out _))
                        {
                            errors.Add($"{path}.{k.GetString()}: required");
                        }
                    }
                }

                schema.TryGetProperty("properties", out var props);
                schema.TryGetProperty("additionalProperties", out var additional);
                foreach (var p in value.EnumerateObject())
                {
                    if (props.ValueKind == JsonValueKind.Object && props.TryGetProperty(p.Name, out var ps))
                    {
                        Validate(root, ps, p.Value, $"{path}.{p.Name}", errors);
                    }
                    else if (additional.ValueKind == JsonValueKind.False)
                    {
                        errors.Add($"{path}.{p.Name}: not allowed");
                    }
                    else if (additional.ValueKind == JsonValueKind.Object)
                    {
                        Validate(root, additional, p.Value, $"{path}.{p.Name}", errors);
                    }
                }
            }

            if (value.ValueKind == JsonValueKind.Array && schema.TryGetProperty("maxItems", out var maxItems) && value.GetArrayLength() > maxItems.GetInt32())
            {
                errors.Add($"{path}: more than {maxItems.GetInt32().ToString(CultureInfo.InvariantCulture)} items");
            }

            if (value.ValueKind == JsonValueKind.Array && schema.TryGetProperty("items", out var items))
            {
                int i = 0;
                foreach (var item in value.EnumerateArray())
                {
                    Validate(root, items, item, $"{path}[{i++}]", errors);
                }
            }

            if (value.ValueKind == JsonValueKind.String)
            {
                string s = value.GetString()!;
                if (schema.TryGetProperty("pattern", out var pattern) && !Regex.IsMatch(s, pattern.GetString()!))
                {
                    errors.Add($"{path}: '{s}' does not match {pattern.GetString()}");
                }

                if (schema.TryGetProperty("maxLength", out var max) && s.Length > max.GetInt32())
                {
                    errors.Add($"{path}: too long");
                }
            }

            if (value.ValueKind == JsonValueKind.Number)
            {
                long n = value.GetInt64();
                if (schema.TryGetProperty("minimum", out var min) && n < min.GetInt64())
                {
                    errors.Add($"{path}: {n.ToString(CultureInfo.InvariantCulture)} below minimum");
                }

                if (schema.TryGetProperty("maximum", out var max) && n > max.GetInt64())
                {
                    errors.Add($"{path}: {n.ToString(CultureInfo.InvariantCulture)} above maximum");
                }
            }
        }
    }
}
