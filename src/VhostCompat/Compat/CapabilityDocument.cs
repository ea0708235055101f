using System.Text.Json;
using VhostCompat.Virtio;

namespace VhostCompat.Compat;

/// <summary>
/// What a backend offers, as a management tool sees it: the content of a capability document
/// (<see cref="CapabilityDocument"/>), or of a live backend probed over its socket. Immutable.
/// </summary>
public sealed class BackendCapabilities
{
    /// <summary>Creates a capability set.</summary>
    /// <param name="deviceType">Device type.</param>
    /// <param name="virtioFeatures">Virtio features offered in GET_FEATURES (including the vhost-only bits).</param>
    /// <param name="protocolFeatures">Protocol features offered in GET_PROTOCOL_FEATURES.</param>
    /// <param name="queues">Virtqueues the backend serves (net: 2 per queue pair).</param>
    /// <param name="maxQueueSize">Largest ring size accepted.</param>
    /// <param name="configSize">Config space size in bytes (0 = none).</param>
    /// <param name="config">Guest-visible config fields by name (<c>mtu</c>, <c>capacity</c>, <c>blk_size</c>, ...); empty when unknown.</param>
    /// <param name="catalog">The backend's profile catalog, or null when it publishes none.</param>
    /// <param name="maxMemorySlots">Memory slots offered (GET_MAX_MEM_SLOTS), or 8 without CONFIGURE_MEM_SLOTS.</param>
    /// <param name="queueNumReply">The GET_QUEUE_NUM answer (queue pairs for net), or null when unknown.</param>
    public BackendCapabilities(VirtioDeviceType deviceType, ulong virtioFeatures, ulong protocolFeatures, int queues, int maxQueueSize, int configSize, IReadOnlyDictionary<string, string>? config = null, ProfileCatalog? catalog = null, int maxMemorySlots = 8, ulong? queueNumReply = null)
    {
        DeviceType = deviceType;
        VirtioFeatures = virtioFeatures;
        ProtocolFeatures = protocolFeatures;
        Queues = queues;
        MaxQueueSize = maxQueueSize;
        ConfigSize = configSize;
        Config = new SortedDictionary<string, string>(config?.ToDictionary() ?? [], StringComparer.Ordinal);
        Catalog = catalog;
        MaxMemorySlots = maxMemorySlots;
        QueueNumReply = queueNumReply;
    }

    /// <summary>Device type.</summary>
    public VirtioDeviceType DeviceType { get; }

    /// <summary>Virtio features offered (GET_FEATURES).</summary>
    public ulong VirtioFeatures { get; }

    /// <summary>Protocol features offered (GET_PROTOCOL_FEATURES).</summary>
    public ulong ProtocolFeatures { get; }

    /// <summary>Virtqueues served (net: 2 per queue pair).</summary>
    public int Queues { get; }

    /// <summary>GET_QUEUE_NUM answer, when known.</summary>
    public ulong? QueueNumReply { get; }

    /// <summary>Largest ring size accepted.</summary>
    public int MaxQueueSize { get; }

    /// <summary>Config space size in bytes.</summary>
    public int ConfigSize { get; }

    /// <summary>Memory slots offered.</summary>
    public int MaxMemorySlots { get; }

    /// <summary>Guest-visible config fields by name, sorted.</summary>
    public IReadOnlyDictionary<string, string> Config { get; }

    /// <summary>The profile catalog, or null.</summary>
    public ProfileCatalog? Catalog { get; }

    /// <summary>The host's frontend (hypervisor version and the machine types it can load), or null when not recorded.</summary>
    public FrontendInfo? Frontend { get; internal init; }

    /// <summary>
    /// Device-state formats the backend loads (the device's <c>LoadableStateVersions</c>), when it
    /// offers DEVICE_STATE; empty when it does not, or when the document does not say (a probe, an older document).
    /// </summary>
    public IReadOnlyList<uint> DeviceStateVersions { get; internal init; } = [];

    /// <summary>This capability set with <paramref name="frontend"/> as the host's frontend.</summary>
    public BackendCapabilities WithFrontend(FrontendInfo? frontend) =>
        new(DeviceType, VirtioFeatures, ProtocolFeatures, Queues, MaxQueueSize, ConfigSize, Config, Catalog, MaxMemorySlots, QueueNumReply)
        {
            Frontend = frontend,
            DeviceStateVersions = DeviceStateVersions,
        };

    /// <summary>
    /// A capability set from raw protocol answers (e.g. a probe over the socket): the config space
    /// bytes are decoded into guest-visible fields for <paramref name="virtioFeatures"/>.
    /// </summary>
    /// <param name="deviceType">Device type (vhost-user does not carry it; the caller knows it).</param>
    /// <param name="virtioFeatures">GET_FEATURES.</param>
    /// <param name="protocolFeatures">GET_PROTOCOL_FEATURES.</param>
    /// <param name="queues">Virtqueues (net: 2 × GET_QUEUE_NUM).</param>
    /// <param name="maxQueueSize">Largest accepted ring size.</param>
    /// <param name="config">GET_CONFIG bytes from offset 0 (empty when unavailable).</param>
    /// <param name="maxMemorySlots">GET_MAX_MEM_SLOTS, or 8.</param>
    /// <param name="queueNumReply">GET_QUEUE_NUM, when available.</param>
    public static BackendCapabilities FromOffer(VirtioDeviceType deviceType, ulong virtioFeatures, ulong protocolFeatures, int queues, int maxQueueSize, ReadOnlySpan<byte> config, int maxMemorySlots = 8, ulong? queueNumReply = null) =>
        new(deviceType, virtioFeatures, protocolFeatures, queues, maxQueueSize, config.Length,
            VirtioConfigFields.Decode(deviceType, virtioFeatures, config), null, maxMemorySlots, queueNumReply);
}

/// <summary>
/// The capability document a backend prints for <c>--print-capabilities</c>: QEMU's
/// backend-program JSON (<c>type</c>, <c>features</c>) extended with a <c>vhostcompat</c> object
/// holding the virtio and protocol features the backend offers (hex and names), its limits, its
/// guest-visible config fields and its profile catalog. Schema: docs/capabilities.schema.json.
/// Serialised with System.Text.Json source generation (AOT-safe).
/// </summary>
public static class CapabilityDocument
{
    /// <summary>Version of the <c>vhostcompat</c> object's schema written by this SDK (version 1 is still read).</summary>
    public const int SchemaVersion = 2;

    /// <summary>
    /// Prefix of the backend-program <c>features</c> strings that name a profile the backend can serve
    /// (<c>vhostcompat-profile:org.example.vnet.v2</c>), one per catalog profile, so tools that gate on capability
    /// strings (as libvirt does on virtiofsd's <c>migrate-precopy</c>) can gate on profiles.
    /// </summary>
    internal const string ProfileFeaturePrefix = "vhostcompat-profile:";

    /// <summary>Renders a capability set as a document (indented JSON, no trailing newline).</summary>
    public static string Render(BackendCapabilities capabilities)
    {
        ArgumentNullException.ThrowIfNull(capabilities);
        var c = capabilities;
        var json = new CapabilitiesJson
        {
            Type = TypeName(c.DeviceType),
            Features = c.Catalog is null ? [] : [.. c.Catalog.Profiles.Select(p => ProfileFeaturePrefix + p.Id)],
            VhostCompat = new VhostCompatCapabilitiesJson
            {
                SchemaVersion = SchemaVersion,
                DeviceId = (uint)c.DeviceType,
                VirtioFeatures = FeatureText.Hex(c.VirtioFeatures),
                VirtioFeatureNames = [.. Virtio.VirtioFeatures.Names(c.DeviceType, c.VirtioFeatures)],
                ProtocolFeatures = FeatureText.Hex(c.ProtocolFeatures),
                ProtocolFeatureNames = [.. ProtocolFeatureNames.Format(c.ProtocolFeatures)],
                Queues = c.Queues,
                QueueNumReply = c.QueueNumReply,
                MaxQueueSize = c.MaxQueueSize,
                ConfigSize = c.ConfigSize,
                MaxMemorySlots = c.MaxMemorySlots,
                Config = c.Config.ToDictionary(),
                Profiles = c.Catalog is null ? null : new ProfilesJson
                {
                    Latest = c.Catalog.Latest.Id!,
                    Supported = [.. c.Catalog.Profiles.Select(p => new ProfileEntryJson { Id = p.Id!, Canonical = p.Canonical })],
                },
                Frontend = c.Frontend?.ToJsonModel(),
                DeviceStateVersions = c.DeviceStateVersions.Count == 0 ? null : [.. c.DeviceStateVersions],
            },
        };
        return JsonSerializer.Serialize(json, CompatJsonContext.Default.CapabilitiesJson);
    }

    /// <summary>
    /// Parses and validates a capability document (schema version 1 or 2). Strict: unknown
    /// members inside <c>vhostcompat</c>, wrong types, out-of-range numbers, malformed hex, names
    /// that disagree with the hex value, invalid profiles all fail.
    /// </summary>
    /// <param name="utf8">The document.</param>
    /// <param name="fileName">Used in error messages (a path or a label such as <c>&lt;stdin&gt;</c>).</param>
    /// <exception cref="CompatDocumentException">The document is not valid; the message names the file and field.</exception>
    public static BackendCapabilities Parse(ReadOnlyMemory<byte> utf8, string fileName)
    {
        ArgumentNullException.ThrowIfNull(fileName);
        using var doc = CompatJsonReader.ParseDocument(utf8, fileName, CompatJsonReader.Plain);
        var root = doc.RootElement;
        if (!root.TryGetProperty("vhostcompat", out var vc) || vc.ValueKind != JsonValueKind.Object)
        {
            throw new CompatDocumentException(fileName, "$.vhostcompat", "missing: not a VhostCompat capability document");
        }

        if (!vc.TryGetProperty("schema-version", out var sv) || sv.ValueKind != JsonValueKind.Number || !sv.TryGetInt32(out int version) || version is < 1 or > SchemaVersion)
        {
            throw new CompatDocumentException(fileName, "$.vhostcompat.schema-version", $"unsupported schema version (this SDK reads 1..{SchemaVersion})");
        }

        var json = CompatJsonReader.Deserialize(root, CompatJsonContext.Default.CapabilitiesJson, fileName, "$", CompatJsonReader.Plain);
        var v = json.VhostCompat;
        const string P = "$.vhostcompat.";
        if (v.DeviceId is 0 or > 255)
        {
            throw new CompatDocumentException(fileName, P + "device-id", $"{v.DeviceId} is not a virtio device id");
        }

        var type = (VirtioDeviceType)v.DeviceId;
        if (json.Type != TypeName(type))
        {
            throw new CompatDocumentException(fileName, "$.type", $"'{json.Type}' disagrees with device-id {v.DeviceId} ({TypeName(type)})");
        }

        if (!FeatureText.TryParseHex(v.VirtioFeatures, out ulong features))
        {
            throw new CompatDocumentException(fileName, P + "virtio-features", $"'{v.VirtioFeatures}' is not a 0x-prefixed 64-bit hex value");
        }

        if (!FeatureText.TryParseHex(v.ProtocolFeatures, out ulong protocol))
        {
            throw new CompatDocumentException(fileName, P + "protocol-features", $"'{v.ProtocolFeatures}' is not a 0x-prefixed 64-bit hex value");
        }

        if (version >= 2 && (v.VirtioFeatureNames is null || v.ProtocolFeatureNames is null))
        {
            throw new CompatDocumentException(fileName, P + (v.VirtioFeatureNames is null ? "virtio-feature-names" : "protocol-feature-names"), "missing");
        }

        if (v.VirtioFeatureNames is { } vn && !vn.SequenceEqual(Virtio.VirtioFeatures.Names(type, features)))
        {
            throw new CompatDocumentException(fileName, P + "virtio-feature-names", $"disagrees with virtio-features {v.VirtioFeatures}");
        }

        if (v.ProtocolFeatureNames is { } pn && !pn.SequenceEqual(ProtocolFeatureNames.Format(protocol)))
        {
            throw new CompatDocumentException(fileName, P + "protocol-feature-names", $"disagrees with protocol-features {v.ProtocolFeatures}");
        }

        Range(fileName, P + "queues", v.Queues, 1, 255);
        Range(fileName, P + "max-queue-size", v.MaxQueueSize, 1, 32768);
        Range(fileName, P + "config-size", v.ConfigSize, 0, VirtioConfigFields.MaxConfigSize);
        Range(fileName, P + "max-memory-slots", v.MaxMemorySlots, 1, 509);
        if (v.QueueNumReply is > 255)
        {
            throw new CompatDocumentException(fileName, P + "queue-num-reply", $"{v.QueueNumReply} outside 0..255");
        }

        foreach (var (name, value) in v.Config ?? [])
        {
            if (name.Length is 0 or > 64 || !name.All(c => c is (>= 'a' and <= 'z') or (>= '0' and <= '9') or '_')
                || value.Length is 0 or > 20 || !value.All(char.IsAsciiDigit))
            {
                throw new CompatDocumentException(fileName, P + "config", $"entry '{name}': '{value}' is not a lower-case field name with a decimal value");
            }
        }

        ProfileCatalog? catalog = null;
        if (v.Profiles is { } profiles)
        {
            var list = new List<InterfaceProfile>();
            for (int i = 0; i < profiles.Supported.Count; i++)
            {
                var e = profiles.Supported[i];
                string field = $"{P}profiles.supported[{i}]";
                if (!InterfaceProfile.IsValidId(e.Id))
                {
                    throw new CompatDocumentException(fileName, field + ".id", $"'{e.Id}' is not a valid profile id");
                }

                try
                {
                    list.Add(InterfaceProfile.Parse(e.Canonical, type).WithId(e.Id));
                }
                catch (ProfileFormatException ex)
                {
                    throw new CompatDocumentException(fileName, field + ".canonical", ex.Message, ex);
                }
            }

            try
            {
                catalog = new ProfileCatalog(type, list, profiles.Latest);
            }
            catch (ArgumentException ex)
            {
                throw new CompatDocumentException(fileName, P + "profiles", ex.Message, ex);
            }
        }

        CheckProfileFeatures(json.Features, catalog, fileName);
        return new BackendCapabilities(type, features, protocol, v.Queues, v.MaxQueueSize, v.ConfigSize, v.Config, catalog, v.MaxMemorySlots, v.QueueNumReply)
        {
            Frontend = v.Frontend is null ? null : FrontendInfo.From(v.Frontend, fileName, P + "frontend", CompatJsonReader.Plain),
            DeviceStateVersions = StateVersions(v.DeviceStateVersions, fileName),
        };
    }

    // Other feature strings (QEMU's own, e.g. block's read-only) pass; a profile string must name a catalog profile.
    private static void CheckProfileFeatures(List<string> features, ProfileCatalog? catalog, string fileName)
    {
        for (int i = 0; i < features.Count; i++)
        {
            string f = features[i];
            if (f.StartsWith(ProfileFeaturePrefix, StringComparison.Ordinal) && catalog?.Find(f[ProfileFeaturePrefix.Length..]) is null)
            {
                throw new CompatDocumentException(fileName, $"$.features[{i}]", $"'{f}' names a profile that vhostcompat.profiles does not publish");
            }
        }
    }

    private static List<uint> StateVersions(List<uint>? versions, string fileName)
    {
        if (versions is null)
        {
            return [];
        }

        if (versions.Count is 0 or > 64 || versions.Contains(0u) || versions.Distinct().Count() != versions.Count)
        {
            throw new CompatDocumentException(fileName, "$.vhostcompat.device-state-versions", "1..64 distinct nonzero format numbers");
        }

        return [.. versions.Order()];
    }

    /// <summary>Reads and parses a capability document file.</summary>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="CompatDocumentException">The document is not valid.</exception>
    public static BackendCapabilities Load(string path) => Parse(CompatJsonReader.ReadFile(path, CompatJsonReader.Plain), path);

    /// <summary>The backend-program <c>type</c> string QEMU and libvirt use for a device type.</summary>
    public static string TypeName(VirtioDeviceType type) => VirtioDeviceTypes.NameOf(type);

    private static void Range(string file, string field, int value, int min, int max)
    {
        if (value < min || value > max)
        {
            throw new CompatDocumentException(file, field, $"{value} outside {min}..{max}");
        }
    }
}
