using System.Text;
using System.Text.Json.Nodes;
using CsCheck;
using VhostCompat.Backend;
using VhostCompat.Compat;

namespace VhostCompat.Tests.Compat;

/// <summary>The optional <c>frontend</c> member of acked-state records (the VM's side) and capability documents (the host's).</summary>
public sealed class FrontendEmbeddingTests : IDisposable
{
    private static readonly VhostUserBackendOptions Options = new() { SocketPath = "/tmp/x.sock" };

    private readonly string _dir = Directory.CreateTempSubdirectory("vhc-fe").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static AckedStateRecord Parse(string json) => AckedStateRecord.Parse(Encoding.UTF8.GetBytes(json), "rec.json");

    private static BackendCapabilities Caps() =>
        CapabilityDocument.Parse(Encoding.UTF8.GetBytes(CapabilityDocument.Render(new TestNetDevice(TestNetDevice.Parse("version_1,mrg_rxbuf,indirect_desc,event_idx,csum,host_tso4,host_tso6,mq,mtu"), queues: 8), Options, ProfileCatalogTests.NetCatalog())), "caps.json");

    /// <summary>The record's payload with its frontend member changed, re-sealed so that only the frontend is wrong.</summary>
    private static string RecordWithFrontendMember(Action<JsonObject> change)
    {
        var payload = JsonNode.Parse(AckedStateRecordTests.NetRecord().WithFrontend(FrontendInfoTests.Vm()).ToJson())!["payload"]!.AsObject();
        change(payload["frontend"]!.AsObject());
        return AckedStateRecordTests.Seal(payload.ToJsonString());
    }

    [Fact]
    public void A_record_with_a_frontend_round_trips_and_one_without_has_no_member()
    {
        FrontendInfoTests.GenFrontend.Sample(vm =>
        {
            var record = AckedStateRecordTests.NetRecord().WithFrontend(vm);
            var back = Parse(record.ToJson());
            FrontendInfoTests.ShouldBeSame(back.Frontend!, vm);
            back.AckedFeatures.Should().Be(record.AckedFeatures);
            back.Profile!.SameInterface(record.Profile!).Should().BeTrue();
            back.ToJson().Should().Be(record.ToJson());
        }, iter: 100);

        string plain = AckedStateRecordTests.NetRecord().ToJson();
        plain.Should().NotContain("frontend");
        Parse(plain).Frontend.Should().BeNull();
        Parse(AckedStateRecordTests.NetRecord().WithFrontend(FrontendInfoTests.Vm()).WithFrontend(null).ToJson()).Frontend.Should().BeNull();
    }

    [Fact]
    public void A_record_written_before_the_member_existed_still_loads()
    {
        // The payload members of a record from an SDK without frontend support, as that SDK wrote them.
        const string payload = """
            {"key":"vm-1234.net0","device-type":"net","generation":3,"saved-at":"2026-01-05T10:00:00.000Z","acked-features":"0x170008000","acked-feature-names":["mrg_rxbuf","indirect_desc","event_idx","protocol_features","version_1"],"acked-protocol-features":"0x1a009","queue-count":2,"queue-sizes":[{"index":0,"size":256},{"index":1,"size":256}],"config":"52540012345600000100dc05"}
            """;
        var old = Parse(AckedStateRecordTests.Seal(payload));
        old.Frontend.Should().BeNull();
        old.Generation.Should().Be(3);
        old.AckedFeatures.Should().Be(0x170008000UL);
        old.QueueSizes.Should().HaveCount(2);
    }

    [Fact]
    public void The_store_keeps_the_frontend_across_saves()
    {
        var store = new AckedStateStore(_dir);
        var vm = FrontendInfoTests.Vm();
        store.Save(AckedStateRecordTests.NetRecord().WithFrontend(vm)).Generation.Should().Be(1);
        var saved = store.Save(store.Load("vm-1234.net0")!);
        saved.Generation.Should().Be(2);
        FrontendInfoTests.ShouldBeSame(store.Load("vm-1234.net0")!.Frontend!, vm);
    }

    [Fact]
    public void A_changed_frontend_in_a_record_fails_the_checksum()
    {
        string json = AckedStateRecordTests.NetRecord().WithFrontend(FrontendInfoTests.Vm("pc-q35-10.0")).ToJson();
        string edited = json.Replace("\"machine\":\"pc-q35-10.0\"", "\"machine\":\"pc-q35-7.2\"", StringComparison.Ordinal);
        edited.Should().NotBe(json);
        FluentActions.Invoking(() => Parse(edited)).Should().Throw<AckedStateCorruptException>().Which.Field.Should().Be("sha256");
    }

    public static TheoryData<string, string> BadRecordFrontends() => new()
    {
        { RecordWithFrontendMember(f => f["machine"] = "pc q35"), "$.payload.frontend.machine" },
        { RecordWithFrontendMember(f => f["machines"] = new JsonArray((JsonNode?)null)), "$.payload.frontend.machines" },
        { RecordWithFrontendMember(f => f["product-version"] = new string('1', 65)), "$.payload.frontend.product-version" },
        { RecordWithFrontendMember(f => f["surprise"] = true), "$.payload.frontend" },
        { RecordWithFrontendMember(f => f.Remove("product")), "$.payload.frontend" },
    };

    [Theory]
    [MemberData(nameof(BadRecordFrontends))]
    public void A_bad_frontend_in_a_sealed_record_is_named(string json, string field)
    {
        FluentActions.Invoking(() => Parse(json)).Should().Throw<AckedStateCorruptException>().Which.Field.Should().StartWith(field);
    }

    [Fact]
    public void A_capability_document_with_a_frontend_round_trips()
    {
        var caps = Caps();
        var host = QemuCapture.Host();
        string json = CapabilityDocument.Render(caps.WithFrontend(host));
        var back = CapabilityDocument.Parse(Encoding.UTF8.GetBytes(json), "dst.json");
        FrontendInfoTests.ShouldBeSame(back.Frontend!, host);
        back.VirtioFeatures.Should().Be(caps.VirtioFeatures);
        back.Queues.Should().Be(caps.Queues);
        back.Catalog!.Profiles.Should().Equal(caps.Catalog!.Profiles);
        CapabilityDocument.Render(back).Should().Be(json);

        // Without one the document is what it was before frontends existed.
        CapabilityDocument.Render(back.WithFrontend(null)).Should().Be(CapabilityDocument.Render(caps)).And.NotContain("frontend");
        caps.Frontend.Should().BeNull();
    }

    [Fact]
    public void A_bad_frontend_in_a_capability_document_is_named()
    {
        var node = JsonNode.Parse(CapabilityDocument.Render(Caps().WithFrontend(QemuCapture.Host())))!;
        node["vhostcompat"]!["frontend"]!["machines"]!.AsArray().Add("pc-q35 10.0");
        var act = () => CapabilityDocument.Parse(Encoding.UTF8.GetBytes(node.ToJsonString()), "dst.json");
        act.Should().Throw<CompatDocumentException>().Which.Field.Should().Be("$.vhostcompat.frontend.machines");

        node["vhostcompat"]!["frontend"]!["machines"] = new JsonArray((JsonNode?)null);
        act.Should().Throw<CompatDocumentException>().Which.Field.Should().Be("$.vhostcompat.frontend.machines");
    }
}
