using System.Text;
using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Fuzz.Targets;

/// <summary>Valid value lists, records, capability documents and lock files, rendered by the SDK itself.</summary>
internal static class CompatSeeds
{
    private const string V1 = "version_1=on,mrg_rxbuf=on,max_ring=256";
    private const string V2 = "version_1=on,mrg_rxbuf=on,indirect_desc=on,event_idx=on,csum=on,host_tso4=on,host_tso6=on,max_ring=1024,mq=on,queues=4";

    public static ProfileCatalog NetCatalog() => ProfileCatalog.Declare(VirtioDeviceType.Net, "org.example.vnet.v2", ("org.example.vnet.v1", V1), ("org.example.vnet.v2", V2));

    public static IEnumerable<(string Name, byte[] Data)> All()
    {
        var catalog = NetCatalog();
        var v2 = catalog.Find("org.example.vnet.v2")!;
        yield return ("profile-net-v1", Seed(CompatTarget.Profile, 1, V1));
        yield return ("profile-net-v2-canonical", Seed(CompatTarget.Profile, 1, v2.Canonical));
        yield return ("profile-untyped", Seed(CompatTarget.Profile, 0, "type=net,mrg_rxbuf=on,mtu=9000"));
        yield return ("profile-block", Seed(CompatTarget.Profile, 2, "type=block,blk_size=4096,capacity=2097152,flush=on,mq=on,queues=4,version_1=on"));

        var record = new AckedStateRecord("fuzz-key", VirtioDeviceType.Net, v2.Features, 0x1a009, v2, 4,
            new Dictionary<int, int> { [0] = 256, [1] = 256, [2] = 1024, [3] = 1024 }, new byte[] { 0x52, 0x54, 0, 0x12, 0x34, 0x56, 1, 0 }, generation: 3,
            savedAt: new DateTimeOffset(2026, 1, 2, 3, 4, 5, TimeSpan.Zero));
        yield return ("record-net", Seed(CompatTarget.Record, 0, record.ToJson()));
        var unpinned = new AckedStateRecord("k2", VirtioDeviceType.Block, 1UL << 32, 0, null, 1, new Dictionary<int, int> { [0] = 128 }, [],
            savedAt: new DateTimeOffset(2026, 1, 2, 3, 4, 5, TimeSpan.Zero), profilePinned: false);
        yield return ("record-block-unpinned", Seed(CompatTarget.Record, 0, unpinned.ToJson()));

        var caps = new BackendCapabilities(VirtioDeviceType.Net, v2.Features, 0x1a009, 8, 1024, 12, catalog: catalog);
        yield return ("capabilities-net", Seed(CompatTarget.Capabilities, 0, CapabilityDocument.Render(caps)));
        var blk = new BackendCapabilities(VirtioDeviceType.Block, 1UL << 32, 0, 1, 256, 0);
        yield return ("capabilities-block", Seed(CompatTarget.Capabilities, 0, CapabilityDocument.Render(blk)));

        yield return ("lock-net", Seed(CompatTarget.Lock, 0, ProfileLock.FromCatalog(catalog).ToJson()));
        yield return ("pin-id", Seed(CompatTarget.Catalog, 0, "org.example.vnet.v1"));
        yield return ("pin-values", Seed(CompatTarget.Catalog, 0, "mrg_rxbuf=on,version_1=on"));
    }

    private static byte[] Seed(byte parser, byte type, string text) => [parser, type, .. Encoding.UTF8.GetBytes(text)];
}
