using System.Text.Json;
using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Tests.Compat;

public sealed class CatalogCliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vhc-catcli").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Caps(string name, ulong features)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllText(path, CapabilityDocument.Render(ProfileCatalogFileTests.DpdkOffer(features)));
        return path;
    }

    private string CatalogPath => Path.Combine(_dir, "dpdk-net.json");

    [Fact]
    public async Task Add_creates_the_file_grows_it_and_refuses_to_change_a_published_entry()
    {
        string plain = Caps("plain.json", ProfileCatalogFileTests.DpdkDefault);
        string tso = Caps("tso.json", ProfileCatalogFileTests.DpdkTso);

        var (code, output, err) = await CliTests.Run("catalog", "add", "--catalog", CatalogPath, "--id", "org.dpdk.v22.11", "--caps", plain,
            "--source-backend", "dpdk-testpmd 22.11.11", "--source-devargs", "");
        (code, err).Should().Be((0, string.Empty));
        output.Should().StartWith($"added org.dpdk.v22.11 to {CatalogPath} (1 profiles, latest org.dpdk.v22.11)\n  type=net,");

        (code, _, _) = await CliTests.Run("catalog", "add", "--catalog", CatalogPath, "--id", "org.dpdk.v22.11.tso", "--caps", tso, "--latest");
        code.Should().Be(0);
        var (catalog, sources) = ProfileCatalogFile.LoadWithSources(CatalogPath);
        catalog.Profiles.Select(p => p.Id).Should().Equal("org.dpdk.v22.11", "org.dpdk.v22.11.tso");
        catalog.Latest.Id.Should().Be("org.dpdk.v22.11.tso");
        sources["org.dpdk.v22.11"].Should().Be(new ProfileSource("dpdk-testpmd 22.11.11", string.Empty, DateOnly.FromDateTime(DateTime.UtcNow)));
        sources.Should().NotContainKey("org.dpdk.v22.11.tso");

        // The same values again: nothing is written.
        string before = File.ReadAllText(CatalogPath);
        (code, output, _) = await CliTests.Run("catalog", "add", "--catalog", CatalogPath, "--id", "org.dpdk.v22.11", "--caps", plain);
        code.Should().Be(0);
        output.Should().StartWith("org.dpdk.v22.11 is already in");
        File.ReadAllText(CatalogPath).Should().Be(before);

        // Other values under a published id: refused with the keys, exit 1, file untouched.
        (code, output, err) = await CliTests.Run("catalog", "add", "--catalog", CatalogPath, "--id", "org.dpdk.v22.11", "--caps", tso);
        code.Should().Be(1);
        output.Should().BeEmpty();
        err.Should().Be($"vhost-compat: {CatalogPath}: refused: profile org.dpdk.v22.11 is published with other values (host_tso4 off -> on, host_tso6 off -> on); catalogs only grow: publish a new id\n");
        File.ReadAllText(CatalogPath).Should().Be(before);

        (code, output, _) = await CliTests.Run("catalog", "add", "--catalog", CatalogPath, "--id", "org.dpdk.v22.11", "--caps", tso, "--json");
        code.Should().Be(1);
        JsonDocument.Parse(output).RootElement.GetProperty("refused").GetString().Should().Contain("host_tso4 off -> on");
    }

    [Fact]
    public async Task Show_lists_profiles_sources_and_differences_from_the_latest()
    {
        await CliTests.Run("catalog", "add", "--catalog", CatalogPath, "--id", "org.dpdk.v22.11.tso", "--caps", Caps("t.json", ProfileCatalogFileTests.DpdkTso),
            "--source-backend", "dpdk-testpmd 22.11.11", "--source-devargs", "tso=1");
        await CliTests.Run("catalog", "add", "--catalog", CatalogPath, "--id", "org.dpdk.v24.11", "--caps", Caps("p.json", ProfileCatalogFileTests.DpdkDefault), "--latest");

        var (code, output, _) = await CliTests.Run("catalog", "show", CatalogPath);
        code.Should().Be(0);
        output.Should().StartWith($"{CatalogPath}: net catalog, 2 profiles, latest org.dpdk.v24.11\n  org.dpdk.v22.11.tso\n    source: dpdk-testpmd 22.11.11, devargs 'tso=1', probed ");
        output.Should().Contain("    vs org.dpdk.v24.11: host_tso4 on -> off, host_tso6 on -> off\n").And.Contain("  org.dpdk.v24.11 (latest)\n");

        (code, output, _) = await CliTests.Run("catalog", "show", CatalogPath, "--json");
        code.Should().Be(0);
        output.Should().Be(File.ReadAllText(CatalogPath));
    }

    [Theory]
    [InlineData("catalog", "add", "--catalog", "{dir}/c.json", "--id", "org.x.a")]
    [InlineData("catalog", "add", "--catalog", "{dir}/c.json", "--id", "org.x.a", "--caps", "{dir}/a.json", "--socket", "/tmp/none.sock")]
    [InlineData("catalog", "add", "--catalog", "{dir}/c.json", "--id", "Bad.Id", "--caps", "{dir}/a.json")]
    [InlineData("catalog", "add", "--catalog", "{dir}/c.json", "--id", "org.x.a", "--caps", "{dir}/a.json", "--type", "block")]
    [InlineData("catalog", "add", "--catalog", "{dir}/c.json", "--id", "org.x.a", "--caps", "{dir}/a.json", "--source-devargs", "x")]
    [InlineData("catalog", "add", "--catalog", "{dir}/c.json", "--id", "org.x.a", "--caps", "{dir}/missing.json")]
    [InlineData("catalog", "add", "--catalog", "{dir}/c.json", "--id", "org.x.a", "--socket", "{dir}/no.sock", "--timeout", "0.5")]
    [InlineData("catalog", "add", "--catalog", "{dir}/bad.json", "--id", "org.x.a", "--caps", "{dir}/a.json")]
    [InlineData("catalog", "add", "--catalog", "{dir}/blk.json", "--id", "org.x.a", "--caps", "{dir}/a.json")]
    [InlineData("catalog", "show", "{dir}/bad.json")]
    [InlineData("catalog", "show", "{dir}/missing.json")]
    [InlineData("catalog", "add", "--id", "org.x.a", "--caps", "{dir}/a.json")]
    public async Task Bad_arguments_and_files_are_one_line_exit_2(params string[] args)
    {
        Caps("a.json", ProfileCatalogFileTests.DpdkDefault);
        File.WriteAllText(Path.Combine(_dir, "bad.json"), "{\"format\":\"vhostcompat-catalog\",\"version\":1,\"type\":\"net\",\"latest\":\"org.x.a\",\"profiles\":[{\"id\":\"org.x.a\",\"canonical\":\"type=net,bogus=on\"}]}");
        ProfileCatalogFile.Save(Path.Combine(_dir, "blk.json"), ProfileCatalog.Declare(VirtioDeviceType.Block, "org.x.b", ("org.x.b", "flush=on")));
        var (code, output, err) = await CliTests.Run([.. args.Select(a => a.Replace("{dir}", _dir, StringComparison.Ordinal))]);
        code.Should().Be(2);
        output.Should().BeEmpty();
        err.TrimEnd('\n').Should().NotContain("\n   at ", "no stack trace");
        err.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => !l.StartsWith("run 'vhost-compat --help'", StringComparison.Ordinal)).Should().ContainSingle();
        err.Should().StartWith("vhost-compat: ");
        File.Exists(Path.Combine(_dir, "c.json")).Should().BeFalse();
    }
}
