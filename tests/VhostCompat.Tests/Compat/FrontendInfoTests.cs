using System.Text;
using System.Text.Json.Nodes;
using CsCheck;
using VhostCompat.Compat;

namespace VhostCompat.Tests.Compat;

public class FrontendInfoTests
{
    private const string NameChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+";

    /// <summary>Valid names: 1..64 of the allowed characters.</summary>
    internal static readonly Gen<string> GenName = Gen.Char[NameChars].Array[1, 64].Select(c => new string(c));

    internal static readonly Gen<FrontendInfo> GenFrontend = Gen.Select(
        GenName, GenName, GenName.Null(0.3), GenName.List[0, 40], (p, v, m, ms) => new FrontendInfo(p, v, m, ms));

    internal static FrontendInfo Vm(string machine = "pc-q35-10.0") => new("qemu", "10.0.2", machine);

    internal static void ShouldBeSame(FrontendInfo actual, FrontendInfo expected)
    {
        actual.Product.Should().Be(expected.Product);
        actual.Version.Should().Be(expected.Version);
        actual.Machine.Should().Be(expected.Machine);
        actual.Machines.Should().Equal(expected.Machines);
    }

    [Fact]
    public void Any_valid_frontend_round_trips_through_its_document()
    {
        GenFrontend.Sample(f =>
        {
            string json = f.ToJson();
            json.Should().EndWith("\n");
            var back = FrontendInfo.Parse(Encoding.UTF8.GetBytes(json), "f.json");
            ShouldBeSame(back, f);
            back.ToJson().Should().Be(json);
        }, iter: 300);
    }

    [Fact]
    public void Machines_are_kept_sorted_and_distinct()
    {
        GenName.List[0, 40].Sample(names =>
        {
            var f = new FrontendInfo("qemu", "7.2.22", null, names.Concat(names));
            f.Machines.Should().Equal(names.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal));
        }, iter: 100);
    }

    [Fact]
    public void Document_carries_format_version_and_kebab_case_members()
    {
        var f = new FrontendInfo("qemu", "10.0.2", "pc-q35-10.0", ["pc-q35-10.0", "q35"]);
        var root = JsonNode.Parse(f.ToJson())!.AsObject();
        root.Select(p => p.Key).Should().Equal("format", "version", "product", "product-version", "machine", "machines");
        ((string?)root["format"]).Should().Be(FrontendInfo.FormatName);
        ((int)root["version"]!).Should().Be(1);
        ((string?)root["product-version"]).Should().Be(f.Version);

        // A host's frontend has no machine of its own: the member is left out, and so it parses back as null.
        var host = JsonNode.Parse(f.WithMachine(null).ToJson())!.AsObject();
        host.ContainsKey("machine").Should().BeFalse();
        FrontendInfo.Parse(Encoding.UTF8.GetBytes(host.ToJsonString()), "h.json").Machine.Should().BeNull();
    }

    public static TheoryData<string, string> BadDocuments() => new()
    {
        { Mutate(d => d["surprise"] = 1), "surprise" },
        { Mutate(d => d["product"] = 5), "$.product" },
        { Mutate(d => d["machines"] = "pc"), "$.machines" },
        { Mutate(d => d["machines"] = new JsonArray(1, 2)), "$.machines" },
        { Mutate(d => d["machines"] = new JsonArray((JsonNode?)null)), "$.machines" },
        { Mutate(d => d["version"] = "1"), "$.version" },
        { Mutate(d => d["product"] = null), "$.product" },
        { Mutate(d => d.Remove("product-version")), "product-version" },
        { Mutate(d => d["format"] = "vhostcompat-acked-state"), "$.format" },
        { Mutate(d => d.Remove("format")), "$.format" },
        { Mutate(d => d["version"] = 2), "$.version" },
        { Mutate(d => d["product"] = "qemu/x"), "$.product" },
        { Mutate(d => d["product-version"] = "10.0 rc1"), "$.product-version" },
        { Mutate(d => d["machine"] = ""), "$.machine" },
        { Mutate(d => d["machine"] = "../../etc"), "$.machine" },
        { Mutate(d => d["machines"] = new JsonArray(new string('a', 65))), "$.machines" },
        { Mutate(d => d["machines"] = new JsonArray([.. Enumerable.Range(0, 513).Select(i => (JsonNode?)$"m{i}")])), "$.machines" },
        { "[]", "$" },
        { "{\"format\":\"vhostcompat-frontend\"", "malformed JSON" },
    };

    [Theory]
    [MemberData(nameof(BadDocuments))]
    public void Bad_documents_fail_naming_the_file_and_field(string json, string field)
    {
        var act = () => FrontendInfo.Parse(Encoding.UTF8.GetBytes(json), "vm.json");
        var ex = act.Should().Throw<CompatDocumentException>().Which;
        ex.FileName.Should().Be("vm.json");
        ex.Message.Should().StartWith("vm.json: ").And.Contain(field);
    }

    [Fact]
    public void Names_within_the_limits_are_accepted()
    {
        string longest = new('a', 64);
        var many = Enumerable.Range(0, 512).Select(i => $"m{i}").ToList();
        var f = FrontendInfo.Parse(Encoding.UTF8.GetBytes(Mutate(d =>
        {
            d["machine"] = longest;
            d["machines"] = new JsonArray([.. many.Select(m => (JsonNode?)m)]);
        })), "vm.json");
        f.Machine.Should().Be(longest);
        f.Machines.Should().HaveCount(many.Count);
    }

    [Fact]
    public void Constructor_rejects_what_parsing_rejects()
    {
        foreach (string bad in new[] { "", " ", "pc q35", "a/b", "é", new string('a', 65) })
        {
            FluentActions.Invoking(() => new FrontendInfo(bad, "1", null)).Should().Throw<ArgumentException>().Which.ParamName.Should().Be("product");
            FluentActions.Invoking(() => new FrontendInfo("qemu", bad, null)).Should().Throw<ArgumentException>().Which.ParamName.Should().Be("version");
            FluentActions.Invoking(() => Vm(bad)).Should().Throw<ArgumentException>().Which.ParamName.Should().Be("machine");
            FluentActions.Invoking(() => new FrontendInfo("qemu", "1", null, [bad])).Should().Throw<ArgumentException>().Which.ParamName.Should().Be("machines");
        }

        var tooMany = Enumerable.Range(0, 513).Select(i => $"m{i}");
        FluentActions.Invoking(() => new FrontendInfo("qemu", "1", null, tooMany)).Should().Throw<ArgumentException>().WithMessage("*513*");
    }

    [Fact]
    public void Can_load_is_unknown_without_machines_and_exact_with_them()
    {
        Vm().CanLoad("pc-q35-10.0").Should().BeNull("a frontend without a machine list says nothing");
        var qemu72 = QemuCapture.Host();
        qemu72.CanLoad("pc-q35-7.2").Should().BeTrue();
        qemu72.CanLoad("q35").Should().BeTrue("aliases are listed too");
        qemu72.CanLoad("pc-q35-10.0").Should().BeFalse();
        qemu72.CanLoad("PC-Q35-7.2").Should().BeFalse("machine type names are compared exactly");
    }

    [Fact]
    public void With_machine_keeps_the_rest_and_text_names_the_machine()
    {
        var host = QemuCapture.Host();
        var vm = host.WithMachine("pc-q35-7.2");
        ShouldBeSame(vm.WithMachine(null), host);
        vm.Machine.Should().Be("pc-q35-7.2");
        vm.ToString().Should().Be($"qemu {host.Version}, machine pc-q35-7.2");
        host.ToString().Should().Be($"qemu {host.Version}");
    }

    [Fact]
    public void Load_reads_a_file_and_names_it_in_errors()
    {
        string path = Path.Combine(Path.GetTempPath(), $"vhc-frontend-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, Vm().ToJson());
        try
        {
            ShouldBeSame(FrontendInfo.Load(path), Vm());
            File.WriteAllText(path, Vm().ToJson().Replace("\"version\": 1", "\"version\": 2", StringComparison.Ordinal));
            FluentActions.Invoking(() => FrontendInfo.Load(path)).Should().Throw<CompatDocumentException>().Which.FileName.Should().Be(path);
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static string Mutate(Action<JsonObject> change)
    {
        var node = JsonNode.Parse(new FrontendInfo("qemu", "10.0.2", "pc-q35-10.0", ["pc-q35-10.0", "pc-q35-7.2", "q35"]).ToJson())!.AsObject();
        change(node);
        return node.ToJsonString();
    }
}
