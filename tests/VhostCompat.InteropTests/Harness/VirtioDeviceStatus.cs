using System.Globalization;
using System.Text.Json.Nodes;
using VhostCompat.Virtio;

namespace VhostCompat.InteropTests.Harness;

/// <summary>
/// QEMU's own view of one virtio device, from QMP <c>x-query-virtio</c> (to find the device's QOM path by its virtio
/// name) and <c>x-query-virtio-status</c>. QEMU 7.2 prints feature sets decoded, as lists of
/// <c>"VIRTIO_BLK_F_DISCARD: Discard command supported"</c> strings (plus <c>unknown-dev-features</c>); they are turned
/// back into bit masks with the SDK's feature table (<see cref="VirtioFeatures.Known"/>, the specification names).
/// </summary>
/// <param name="VhostFeatures">vhost-dev <c>features</c>: what the vhost-user backend offered QEMU (GET_FEATURES), 0 before vhost started.</param>
/// <param name="VhostAckedFeatures">vhost-dev <c>acked-features</c>: what QEMU acked to the backend (SET_FEATURES, without PROTOCOL_FEATURES).</param>
public sealed record VirtioDeviceStatus(string Path, ulong GuestFeatures, ulong HostFeatures, ulong BackendFeatures, ulong VhostFeatures, ulong VhostAckedFeatures,
    IReadOnlyList<string> Statuses, JsonObject Raw)
{
    /// <summary>Finds the first device named <paramref name="virtioName"/> (e.g. "virtio-blk") and returns its status, or throws.</summary>
    public static async Task<VirtioDeviceStatus> QueryAsync(QmpClient qmp, string virtioName, VirtioDeviceType type, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(qmp);
        var devices = await qmp.ExecuteAsync("x-query-virtio", null, cancellationToken).ConfigureAwait(false) as JsonArray
            ?? throw new InvalidOperationException("x-query-virtio returned no list");
        var path = devices.Where(d => d?["name"]?.GetValue<string>() == virtioName).Select(d => d!["path"]?.GetValue<string>()).FirstOrDefault()
            ?? throw new InvalidOperationException($"x-query-virtio lists no {virtioName}: {devices.ToJsonString()}");
        var status = await qmp.ExecuteAsync("x-query-virtio-status", new JsonObject { ["path"] = path }, cancellationToken).ConfigureAwait(false) as JsonObject
            ?? throw new InvalidOperationException($"x-query-virtio-status {path} returned nothing");
        var statuses = status["status"]?["statuses"] is JsonArray s ? s.Select(x => x?.GetValue<string>() ?? string.Empty).ToList() : [];
        var vhost = status["vhost-dev"];
        return new VirtioDeviceStatus(path, Decode(status["guest-features"], type), Decode(status["host-features"], type), Decode(status["backend-features"], type),
            Decode(vhost?["features"], type), Decode(vhost?["acked-features"], type), statuses, status);
    }

    /// <summary>
    /// A QEMU 7.2 <c>VirtioDeviceFeatures</c> object (<c>transports</c>, <c>dev-features</c>, <c>unknown-dev-features</c>) as a
    /// mask. A name the SDK's table does not know is an error (it would otherwise silently drop a bit).
    /// </summary>
    public static ulong Decode(JsonNode? features, VirtioDeviceType type)
    {
        if (features is not JsonObject o)
        {
            return 0;
        }

        ulong mask = 0;
        foreach (var list in new[] { o["transports"], o["dev-features"] })
        {
            foreach (var item in list as JsonArray ?? [])
            {
                var text = item?.GetValue<string>() ?? string.Empty;
                var name = text.Split(':', 2)[0].Trim();
                var feature = VirtioFeatures.Known(type).FirstOrDefault(f => string.Equals(f.SpecName, name, StringComparison.Ordinal))
                    ?? throw new InvalidOperationException($"x-query-virtio-status names a feature the SDK does not know: '{text}'");
                mask |= feature.Mask;
            }
        }

        if (o["unknown-dev-features"] is JsonNode unknown)
        {
            mask |= unknown.GetValue<ulong>();
        }

        return mask;
    }

    /// <summary>"0x... (name,name,...)" with the SDK's canonical names.</summary>
    public static string Describe(VirtioDeviceType type, ulong features) =>
        $"0x{features.ToString("x", CultureInfo.InvariantCulture)} ({VirtioFeatures.Format(type, features)})";
}
