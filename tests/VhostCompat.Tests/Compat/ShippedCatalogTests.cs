using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Tests.Compat;

/// <summary>
/// The catalogs of real backends shipped with the tool (src/VhostCompat.Cli/catalogs/) only grow: every profile in their
/// committed locks (catalogs/locks/) is still there with the same values, and the locks are up to date. To record new
/// entries, run with VHOSTCOMPAT_UPDATE_CATALOG_LOCKS=1 (refused when a published entry was removed or changed).
/// Whether the entries still match the real backends is RealBackendCatalogInteropTests' job.
/// </summary>
public sealed class ShippedCatalogTests
{
    public static TheoryData<string, string> Catalogs => new()
    {
        { "dpdk-net", "net" },
        { "qemu-storage-daemon-blk", "block" },
    };

    private static string CatalogDirectory
    {
        get
        {
            var dir = new DirectoryInfo(AppContext.BaseDirectory);
            while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "VhostCompat.sln")))
            {
                dir = dir.Parent;
            }

            return Path.Combine(dir?.FullName ?? throw new DirectoryNotFoundException("VhostCompat.sln not found"), "src", "VhostCompat.Cli", "catalogs");
        }
    }

    [Theory]
    [MemberData(nameof(Catalogs))]
    public void Shipped_catalog_only_grew_relative_to_its_committed_lock(string name, string type)
    {
        string catalogPath = Path.Combine(CatalogDirectory, name + ".json");
        string lockPath = Path.Combine(CatalogDirectory, "locks", name + ".lock.json");
        var (catalog, sources) = ProfileCatalogFile.LoadWithSources(catalogPath);
        CapabilityDocument.TypeName(catalog.DeviceType).Should().Be(type);
        sources.Keys.Should().BeEquivalentTo(catalog.Profiles.Select(p => p.Id), "every shipped entry says which backend it was probed from");
        if (Environment.GetEnvironmentVariable("VHOSTCOMPAT_UPDATE_CATALOG_LOCKS") == "1")
        {
            ProfileLock.Update(lockPath, catalog).Where(f => f.IsError).Should().BeEmpty();
        }

        File.Exists(lockPath).Should().BeTrue("the lock is committed next to the catalog");
        ProfileLock.Verify(catalog, ProfileLock.Load(lockPath)).Select(f => f.Message).Should().BeEmpty(
            "a published entry must never change or go away, and new entries go into the lock (VHOSTCOMPAT_UPDATE_CATALOG_LOCKS=1)");
        ProfileCatalogFile.Render(catalog, sources).Should().Be(File.ReadAllText(catalogPath), "the file is in the normalised form `catalog add` writes");
    }

    [Fact]
    public void The_DPDK_catalog_has_the_measured_offers()
    {
        var catalog = ProfileCatalogFile.Load(Path.Combine(CatalogDirectory, "dpdk-net.json"));
        catalog.Latest.Id.Should().Be("org.dpdk.v24.11");
        ulong tso = VirtioFeatures.Parse(VirtioDeviceType.Net, "host_tso4,host_tso6");
        foreach (var (id, features) in new[] { ("org.dpdk.v22.11", 0xd7c66e7cbUL), ("org.dpdk.v22.11.tso", 0xd7c66ffcbUL), ("org.dpdk.v24.11", 0xd7c66e7cbUL), ("org.dpdk.v24.11.tso", 0xd7c66ffcbUL) })
        {
            catalog.Find(id)!.Features.Should().Be(features & ~VirtioFeatures.VhostOnlyMask, id);
        }

        catalog.Find("org.dpdk.v22.11")!.SameInterface(catalog.Find("org.dpdk.v24.11")).Should().BeTrue("with the same devargs 22.11 and 24.11 offer the same");
        (catalog.Find("org.dpdk.v24.11.tso")!.Features & ~catalog.Find("org.dpdk.v24.11")!.Features).Should().Be(tso);
    }
}
