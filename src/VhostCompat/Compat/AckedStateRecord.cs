using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using VhostCompat.Virtio;

namespace VhostCompat.Compat;

/// <summary>
/// What a frontend actually negotiated with a backend for one device: acked virtio and protocol
/// features, the pinned profile, queue count and ring sizes, and the config space bytes. Persisted
/// per device by <see cref="AckedStateStore"/> so that a restarted or upgraded backend re-offers
/// the same interface, and consumed by <see cref="PreflightCheck"/>. Immutable.
/// </summary>
public sealed class AckedStateRecord
{
    /// <summary>The <c>format</c> value of a record file.</summary>
    public const string FormatName = "vhostcompat-acked-state";

    /// <summary>The record version this SDK reads and writes.</summary>
    public const int CurrentVersion = 1;

    private readonly byte[] _config;

    /// <summary>Creates a record.</summary>
    /// <param name="key">Record key (see <see cref="AckedStateStore.IsValidKey"/>), e.g. a VM UUID plus device name, or <see cref="AckedStateStore.DefaultKey"/>.</param>
    /// <param name="deviceType">Device type.</param>
    /// <param name="ackedFeatures">Virtio features acked with SET_FEATURES (as sent; LOG_ALL is ignored when comparing).</param>
    /// <param name="ackedProtocolFeatures">Protocol features acked with SET_PROTOCOL_FEATURES.</param>
    /// <param name="profile">The profile the backend was pinned to (with its id, if any), or null.</param>
    /// <param name="queueCount">Virtqueues the backend served (net: 2 per queue pair).</param>
    /// <param name="queueSizes">Ring size per queue index for the rings the frontend configured.</param>
    /// <param name="config">Config space bytes as the guest saw them (GET_CONFIG), at most 256; empty when none.</param>
    /// <param name="generation">Save counter, incremented by <see cref="AckedStateStore.Save"/>.</param>
    /// <param name="savedAt">When the record was saved (UTC).</param>
    /// <param name="profilePinned">
    /// True when <paramref name="profile"/> was chosen by management (a pin); false when the backend offered its
    /// catalog's latest unpinned — the guest's interface is then what it acked, and a destination is held to that only.
    /// </param>
    /// <exception cref="ArgumentException">A value out of range.</exception>
    public AckedStateRecord(string key, VirtioDeviceType deviceType, ulong ackedFeatures, ulong ackedProtocolFeatures, InterfaceProfile? profile, int queueCount, IReadOnlyDictionary<int, int> queueSizes, ReadOnlySpan<byte> config, ulong generation = 0, DateTimeOffset? savedAt = null, bool profilePinned = true)
    {
        ArgumentNullException.ThrowIfNull(queueSizes);
        if (!AckedStateStore.IsValidKey(key))
        {
            throw new ArgumentException($"'{key}' is not a valid record key", nameof(key));
        }

        if (queueCount is < 1 or > 255)
        {
            throw new ArgumentException($"queue count {queueCount} outside 1..255", nameof(queueCount));
        }

        foreach (var (index, size) in queueSizes)
        {
            if (index < 0 || index >= queueCount || size is < 1 or > 32768)
            {
                throw new ArgumentException($"queue {index} size {size}: index outside 0..{queueCount - 1} or size outside 1..32768", nameof(queueSizes));
            }
        }

        if (config.Length > VirtioConfigFields.MaxConfigSize)
        {
            throw new ArgumentException($"config is {config.Length} bytes, more than {VirtioConfigFields.MaxConfigSize}", nameof(config));
        }

        if (profile is not null && profile.DeviceType != deviceType)
        {
            throw new ArgumentException("profile is for another device type", nameof(profile));
        }

        Key = key;
        DeviceType = deviceType;
        AckedFeatures = ackedFeatures;
        AckedProtocolFeatures = ackedProtocolFeatures;
        Profile = profile;
        ProfilePinned = profile is not null && profilePinned;
        QueueCount = queueCount;
        QueueSizes = new SortedDictionary<int, int>(queueSizes.ToDictionary());
        _config = config.ToArray();
        Generation = generation;
        SavedAt = savedAt ?? DateTimeOffset.UnixEpoch;
    }

    /// <summary>
    /// True when <see cref="Profile"/> was pinned by management; false when it was only the catalog's latest the
    /// backend offered on its own (or there is no profile). Records written before this field existed count as pinned.
    /// </summary>
    public bool ProfilePinned { get; }

    /// <summary>Record key.</summary>
    public string Key { get; }

    /// <summary>Device type.</summary>
    public VirtioDeviceType DeviceType { get; }

    /// <summary>Acked virtio features.</summary>
    public ulong AckedFeatures { get; }

    /// <summary>Acked protocol features.</summary>
    public ulong AckedProtocolFeatures { get; }

    /// <summary>The pinned profile, or null.</summary>
    public InterfaceProfile? Profile { get; }

    /// <summary>Virtqueues served.</summary>
    public int QueueCount { get; }

    /// <summary>Ring size by queue index (configured rings only), ascending.</summary>
    public IReadOnlyDictionary<int, int> QueueSizes { get; }

    /// <summary>Config space bytes.</summary>
    public ReadOnlyMemory<byte> Config => _config;

    /// <summary>Save counter.</summary>
    public ulong Generation { get; }

    /// <summary>When the record was saved.</summary>
    public DateTimeOffset SavedAt { get; }

    /// <summary>
    /// The VM's frontend (hypervisor version and machine type) when management recorded it with
    /// <see cref="WithFrontend"/> (<c>vhost-compat frontend --qmp SOCKET --record FILE</c>); null otherwise. A backend
    /// cannot see it over vhost-user.
    /// </summary>
    public FrontendInfo? Frontend { get; private init; }

    /// <summary>
    /// The device-state format the source backend writes (the device's <c>StateVersion</c>) when the
    /// frontend acked DEVICE_STATE; null otherwise, and in records written before it existed.
    /// </summary>
    public uint? DeviceStateVersion { get; internal init; }

    /// <summary>This record with <paramref name="frontend"/> as the VM's frontend.</summary>
    public AckedStateRecord WithFrontend(FrontendInfo? frontend) => Copy(Generation, SavedAt, frontend);

    /// <summary>
    /// Everything that keeps a backend offering <paramref name="offer"/> from honouring this record
    /// (a downgrade): missing virtio feature bits and protocol features by name, fewer queues,
    /// smaller ring limit, smaller config space, different guest-visible config. Empty when it can.
    /// </summary>
    public IReadOnlyList<PreflightFinding> CheckHonouredBy(BackendCapabilities offer) =>
        PreflightCheck.Check(null, this, offer).Findings.Where(f => f.Severity == PreflightSeverity.Error).ToList();

    /// <summary>True when <paramref name="other"/> records the same negotiated state (generation and time aside): saving it again would change nothing.</summary>
    internal bool SameStateAs(AckedStateRecord other) =>
        AckedFeatures == other.AckedFeatures && AckedProtocolFeatures == other.AckedProtocolFeatures && QueueCount == other.QueueCount
        && (Profile?.Equals(other.Profile) ?? other.Profile is null) && Config.Span.SequenceEqual(other.Config.Span)
        && QueueSizes.Count == other.QueueSizes.Count && QueueSizes.All(kv => other.QueueSizes.TryGetValue(kv.Key, out int s) && s == kv.Value);

    /// <summary>The record file text: an envelope with format, version and the SHA-256 of the exact payload text.</summary>
    public string ToJson()
    {
        var payload = new AckedStatePayloadJson
        {
            Key = Key,
            DeviceType = VirtioFeatures.TypeLabel(DeviceType),
            Generation = Generation,
            SavedAt = SavedAt.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture),
            AckedFeatures = FeatureText.Hex(AckedFeatures),
            AckedFeatureNames = [.. VirtioFeatures.Names(DeviceType, AckedFeatures)],
            AckedProtocolFeatures = FeatureText.Hex(AckedProtocolFeatures),
            ProfileId = Profile?.Id,
            Profile = Profile?.Canonical,
            ProfilePinned = Profile is null ? null : ProfilePinned,
            QueueCount = QueueCount,
            QueueSizes = [.. QueueSizes.Select(kv => new QueueSizeJson { Index = kv.Key, Size = kv.Value })],
            Config = Convert.ToHexStringLower(_config),
            Frontend = Frontend?.ToJsonModel(),
            DeviceStateVersion = DeviceStateVersion,
        };
        byte[] payloadBytes;
        using (var ms = new MemoryStream())
        {
            using (var pw = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = false }))
            {
                JsonSerializer.Serialize(pw, payload, CompatJsonContext.Default.AckedStatePayloadJson);
            }

            payloadBytes = ms.ToArray();
        }

        using var output = new MemoryStream();
        using (var w = new Utf8JsonWriter(output, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("format", FormatName);
            w.WriteNumber("version", CurrentVersion);
            w.WriteString("sha256", Convert.ToHexStringLower(SHA256.HashData(payloadBytes)));
            w.WritePropertyName("payload");
            w.WriteRawValue(payloadBytes, skipInputValidation: true);
            w.WriteEndObject();
        }

        return Encoding.UTF8.GetString(output.ToArray()) + "\n";
    }

    /// <summary>Parses record file content; <paramref name="fileName"/> is used in error messages.</summary>
    /// <exception cref="AckedStateCorruptException">Truncated, malformed, wrong version, checksum mismatch or invalid values; names the file and field.</exception>
    public static AckedStateRecord Parse(ReadOnlyMemory<byte> utf8, string fileName)
    {
        var err = CompatJsonReader.Corrupt;
        if (utf8.Length == 0)
        {
            throw new AckedStateCorruptException(fileName, null, "the record is empty (truncated write?)");
        }

        using var doc = CompatJsonReader.ParseDocument(utf8, fileName, err);
        var root = doc.RootElement;
        if (!root.TryGetProperty("format", out var format) || format.ValueKind != JsonValueKind.String || format.GetString() != FormatName)
        {
            throw new AckedStateCorruptException(fileName, "format", $"not an acked-state record (expected \"{FormatName}\")");
        }

        if (!root.TryGetProperty("version", out var version) || version.ValueKind != JsonValueKind.Number || !version.TryGetInt32(out int v) || v != CurrentVersion)
        {
            throw new AckedStateCorruptException(fileName, "version", $"unsupported record version (this SDK reads version {CurrentVersion}; a newer SDK wrote it?)");
        }

        if (!root.TryGetProperty("sha256", out var sha) || sha.ValueKind != JsonValueKind.String || sha.GetString() is not { Length: 64 } expected)
        {
            throw new AckedStateCorruptException(fileName, "sha256", "missing or not 64 hex digits");
        }

        if (!root.TryGetProperty("payload", out var payloadElement) || payloadElement.ValueKind != JsonValueKind.Object)
        {
            throw new AckedStateCorruptException(fileName, "payload", "missing or not an object");
        }

        foreach (var p in root.EnumerateObject())
        {
            if (p.Name is not ("format" or "version" or "sha256" or "payload"))
            {
                throw new AckedStateCorruptException(fileName, p.Name, "unknown member");
            }
        }

        string actual = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(payloadElement.GetRawText())));
        if (!string.Equals(actual, expected, StringComparison.Ordinal))
        {
            throw new AckedStateCorruptException(fileName, "sha256", $"checksum mismatch (stored {expected}, computed {actual}): the record was modified or damaged");
        }

        var json = CompatJsonReader.Deserialize(payloadElement, CompatJsonContext.Default.AckedStatePayloadJson, fileName, "$.payload", err);
        const string P = "$.payload.";
        var type = InterfaceProfile.ParseType(json.DeviceType) ?? throw new AckedStateCorruptException(fileName, P + "device-type", $"unknown device type '{json.DeviceType}'");
        if (!FeatureText.TryParseHex(json.AckedFeatures, out ulong features))
        {
            throw new AckedStateCorruptException(fileName, P + "acked-features", $"'{json.AckedFeatures}' is not a 0x-prefixed hex value");
        }

        if (!json.AckedFeatureNames.SequenceEqual(VirtioFeatures.Names(type, features)))
        {
            throw new AckedStateCorruptException(fileName, P + "acked-feature-names", "disagrees with acked-features");
        }

        if (!FeatureText.TryParseHex(json.AckedProtocolFeatures, out ulong protocol))
        {
            throw new AckedStateCorruptException(fileName, P + "acked-protocol-features", $"'{json.AckedProtocolFeatures}' is not a 0x-prefixed hex value");
        }

        InterfaceProfile? profile = null;
        if (json.Profile is not null)
        {
            try
            {
                profile = InterfaceProfile.Parse(json.Profile, type).WithId(json.ProfileId);
            }
            catch (ProfileFormatException ex)
            {
                throw new AckedStateCorruptException(fileName, P + (ex.Key == "id" ? "profile-id" : "profile"), ex.Message, ex);
            }
        }
        else if (json.ProfileId is not null)
        {
            throw new AckedStateCorruptException(fileName, P + "profile", "missing while profile-id is set");
        }

        byte[] config;
        try
        {
            config = Convert.FromHexString(json.Config);
        }
        catch (FormatException ex)
        {
            throw new AckedStateCorruptException(fileName, P + "config", "not hex", ex);
        }

        if (!DateTimeOffset.TryParseExact(json.SavedAt, "yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var savedAt))
        {
            throw new AckedStateCorruptException(fileName, P + "saved-at", $"'{json.SavedAt}' is not a UTC timestamp");
        }

        var sizes = new Dictionary<int, int>();
        foreach (var q in json.QueueSizes)
        {
            if (!sizes.TryAdd(q.Index, q.Size))
            {
                throw new AckedStateCorruptException(fileName, P + "queue-sizes", $"queue {q.Index} appears twice");
            }
        }

        try
        {
            var frontend = json.Frontend is null ? null : FrontendInfo.From(json.Frontend, fileName, P + "frontend", err);
            if (json.DeviceStateVersion == 0)
            {
                throw new AckedStateCorruptException(fileName, P + "device-state-version", "0 is not a device-state format (a device without state writes none)");
            }

            return new AckedStateRecord(json.Key, type, features, protocol, profile, json.QueueCount, sizes, config, json.Generation, savedAt, json.ProfilePinned ?? true)
            {
                Frontend = frontend,
                DeviceStateVersion = json.DeviceStateVersion,
            };
        }
        catch (ArgumentException ex)
        {
            throw new AckedStateCorruptException(fileName, P + (ex.ParamName switch
            {
                "key" => "key",
                "queueCount" => "queue-count",
                "queueSizes" => "queue-sizes",
                "config" => "config",
                _ => "profile",
            }), ex.Message, ex);
        }
    }

    internal AckedStateRecord WithGeneration(ulong generation, DateTimeOffset savedAt) => Copy(generation, savedAt, Frontend);

    private AckedStateRecord Copy(ulong generation, DateTimeOffset savedAt, FrontendInfo? frontend) =>
        new(Key, DeviceType, AckedFeatures, AckedProtocolFeatures, Profile, QueueCount, QueueSizes, _config, generation, savedAt, ProfilePinned)
        {
            Frontend = frontend,
            DeviceStateVersion = DeviceStateVersion,
        };
}
