using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Samples.Net;

/// <summary>
/// The interface profiles this switch publishes. A profile, once published, never changes: a new
/// interface gets a new id. <c>--build N</c> emulates an older release of the sample that only
/// knew profiles v1..vN (its capability is exactly their union), so compatibility between
/// "versions" can be tested with one binary.
/// </summary>
internal static class NetCatalog
{
    public const int LatestBuild = 3;

    private static readonly string[] Values =
    [
        "version_1=on,mrg_rxbuf=on",
        "version_1=on,mrg_rxbuf=on,indirect_desc=on,event_idx=on",
        "version_1=on,mrg_rxbuf=on,indirect_desc=on,event_idx=on,guest_announce=on,packed=on,in_order=on",
    ];

    public static string Id(int version) => $"org.vhostcompat.net.v{version}";

    /// <summary>The catalog of build <paramref name="build"/> for <paramref name="queuePairs"/> queue pairs.</summary>
    public static ProfileCatalog For(int build, int queuePairs)
    {
        string queues = queuePairs > 1 ? $",mq=on,queues={2 * queuePairs}" : ",queues=2";
        var profiles = Enumerable.Range(1, build).Select(v => (Id(v), $"type=net,{Values[v - 1]},max_ring=1024{queues}")).ToArray();
        return ProfileCatalog.Declare(VirtioDeviceType.Net, Id(build), profiles);
    }

    /// <summary>Everything a build can do: the union of its catalog's profiles.</summary>
    public static ulong Features(ProfileCatalog catalog)
    {
        ulong features = 0;
        foreach (var p in catalog.Profiles)
        {
            features |= p.Features;
        }

        return features;
    }
}
