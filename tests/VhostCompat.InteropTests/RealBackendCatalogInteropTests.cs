using VhostCompat.Compat;
using VhostCompat.InteropTests.Harness;
using Xunit.Abstractions;

namespace VhostCompat.InteropTests;

/// <summary>
/// The catalogs of real backends shipped with the tool (src/VhostCompat.Cli/catalogs/, docs/profiles.md "Catalogs of real
/// backends") still describe the installed backends: each entry's backend is started exactly as its source says, probed
/// with <c>vhost-compat probe --json</c>, and the probed offer — as a profile, the way <c>catalog add</c> makes one — must
/// have the entry's values. A difference fails naming each key (a backend update changed what it offers: publish a new
/// id; never edit the entry). A missing peer skips, or fails with VHOSTCOMPAT_REQUIRE_INTEROP.
/// </summary>
[Collection(QemuCollection.Name)]
[Trait("Category", "Interop")]
public sealed class RealBackendCatalogInteropTests(ITestOutputHelper output)
{
    private static readonly string[] CatalogNames = ["dpdk-net", "qemu-storage-daemon-blk"];

    private static string CatalogDirectory => Path.Combine(RepositoryLayout.RepositoryRoot, "src", "VhostCompat.Cli", "catalogs");

    /// <summary>Every (catalog, id) of the shipped catalogs.</summary>
    public static TheoryData<string, string> Entries()
    {
        var data = new TheoryData<string, string>();
        foreach (var name in CatalogNames)
        {
            foreach (var p in ProfileCatalogFile.Load(Path.Combine(CatalogDirectory, name + ".json")).Profiles)
            {
                data.Add(name, p.Id!);
            }
        }

        return data;
    }

    [SkippableTheory]
    [MemberData(nameof(Entries))]
    public async Task Real_backend_still_offers_its_shipped_catalog_entry(string catalog, string id)
    {
        var (entries, sources) = ProfileCatalogFile.LoadWithSources(Path.Combine(CatalogDirectory, catalog + ".json"));
        var entry = entries.Find(id)!;
        sources.TryGetValue(id, out var source).Should().BeTrue($"shipped entry {id} must say which backend it was probed from");
        var (version, problem) = CatalogBackend.CheckPeer(source!);
        PeerCheck.SkipOrFail(problem);
        output.WriteLine($"{id}: {source!.Backend} (installed {version}), devargs '{source.Devargs}', probed {source.Probed:yyyy-MM-dd}");

        var run = InteropRun.Create($"{nameof(Real_backend_still_offers_its_shipped_catalog_entry)}-{id}");
        await using var backend = await CatalogBackend.StartAsync(run, source);
        var probe = await CompatCli.RunAsync(run, "probe", ["probe", "--type", CatalogBackend.ProbeType(source), "--json", backend.Socket], TimeSpan.FromSeconds(60));
        probe.ExitCode.Should().Be(0, $"probe of {source.Backend}: {probe}{run.Diagnostics()}");
        File.WriteAllText(run.PathFor("caps.json"), probe.Stdout);

        var caps = CapabilityDocument.Parse(System.Text.Encoding.UTF8.GetBytes(probe.Stdout), run.PathFor("caps.json"));
        var probed = ProfileCatalogFile.ProfileFromCapabilities(caps, id);
        output.WriteLine($"probed: {probed.Canonical}");
        var diff = entry.Diff(probed);
        diff.Should().BeEmpty(
            $"{source.Backend} (installed {version}) started as {catalog}.json's {id} says no longer offers that entry: " +
            string.Join(", ", diff.Select(d => $"{d.Key}: catalog {d.This}, probed {d.Other}")) +
            " — catalogs only grow: publish a new id for the new offer, never change this one" + run.Diagnostics());
        entry.SameInterface(probed).Should().BeTrue();
    }

    /// <summary>No peer needed: each shipped catalog holds every profile of its committed lock, unchanged (catalogs/locks/).</summary>
    [Fact]
    public void Shipped_catalogs_only_grew_relative_to_their_committed_locks()
    {
        foreach (var name in CatalogNames)
        {
            var catalog = ProfileCatalogFile.Load(Path.Combine(CatalogDirectory, name + ".json"));
            var locked = ProfileLock.Load(Path.Combine(CatalogDirectory, "locks", name + ".lock.json"));
            ProfileLock.Verify(catalog, locked).Where(f => f.IsError).Select(f => f.Message).Should().BeEmpty($"{name}.json must only grow");
        }
    }
}
