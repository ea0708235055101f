using VhostCompat.Backend;
using VhostCompat.Virtio;

namespace VhostCompat.Compat;

/// <summary>
/// A backend cannot present the interface it must: the pinned profile does not fit the build, it
/// contradicts the stored acked-state record, or the build can no longer honour that record (a
/// downgrade). <see cref="Problems"/> lists every reason, feature bits by name.
/// </summary>
public sealed class CompatibilityException : Exception
{
    /// <summary>Creates the exception.</summary>
    public CompatibilityException()
    {
    }

    /// <summary>Creates the exception with a message.</summary>
    public CompatibilityException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and an inner exception.</summary>
    public CompatibilityException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Creates the exception with a summary and every problem.</summary>
    public CompatibilityException(string summary, IReadOnlyList<string> problems)
        : base(summary + ": " + string.Join("; ", problems ?? []))
    {
        Problems = problems ?? [];
    }

    /// <summary>Every reason, one sentence each.</summary>
    public IReadOnlyList<string> Problems { get; } = [];
}

/// <summary>
/// The compatibility state of one backend (one device): the pin it offers and the acked-state record
/// it keeps. Created once at backend start; the session consults it for GET_FEATURES,
/// GET_QUEUE_NUM, ring limits and GET_CONFIG, and reports the negotiated state to it. Not
/// thread-safe: used from one session loop at a time.
/// </summary>
internal sealed class CompatRuntime
{
    private readonly VhostUserDevice _device;
    private readonly AckedStateStore? _store;

    private CompatRuntime(VhostUserDevice device, ProfilePin? pin, AckedStateStore? store, string key, AckedStateRecord? record)
    {
        _device = device;
        Pin = pin;
        _store = store;
        Key = key;
        Record = record;
    }

    /// <summary>The pin, or null when the device's whole capability is offered (no pin, no catalog, no pinned record).</summary>
    public ProfilePin? Pin { get; }

    /// <summary>The record key.</summary>
    public string Key { get; }

    /// <summary>The last record loaded or saved, or null.</summary>
    public AckedStateRecord? Record { get; private set; }

    /// <summary>Virtqueues served (ring indices at or above are refused).</summary>
    public int QueueCount => Pin?.QueueCount ?? _device.QueueCount;

    /// <summary>GET_QUEUE_NUM answer.</summary>
    public ulong QueueNumReply => Pin?.QueueNumReply ?? _device.QueueNumReply;

    /// <summary>SET_VRING_NUM limit.</summary>
    public ushort MaxRingSize => Pin?.MaxRingSize ?? _device.MaxQueueSize;

    /// <summary>
    /// Resolves what the backend offers and checks it against the stored record.
    /// <list type="bullet">
    /// <item>The profile: <paramref name="pin"/> (id through <paramref name="catalog"/>, or a value list);
    /// without a pin the record's profile (the interface the guest already has), else the catalog's latest, else none.</item>
    /// <item>An explicit pin that differs from the record's profile is refused (naming the keys that differ).</item>
    /// <item>A record this build cannot honour is refused (missing bits by name, limits, config).</item>
    /// </list>
    /// </summary>
    /// <param name="device">The device.</param>
    /// <param name="options">Backend options (protocol features depend on them; the default key derives from <see cref="VhostUserBackendOptions.SocketPath"/>).</param>
    /// <param name="catalog">The device's profile catalog, or null.</param>
    /// <param name="pin">The operator's pin (<c>--compat-profile</c>), or null.</param>
    /// <param name="stateDirectory">Directory of acked-state records, or null to keep none.</param>
    /// <param name="recordKey">Record key; null derives it from the socket path (or <c>fd-N</c> for an inherited fd).</param>
    /// <exception cref="ProfileFormatException">The pin is not a valid profile or id.</exception>
    /// <exception cref="CompatibilityException">The pin does not fit the build or the record, or the record cannot be honoured.</exception>
    /// <exception cref="AckedStateCorruptException">The stored record is damaged.</exception>
    public static CompatRuntime Create(VhostUserDevice device, VhostUserBackendOptions options, ProfileCatalog? catalog, string? pin, string? stateDirectory, string? recordKey)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(options);
        if (catalog is not null)
        {
            var problems = catalog.ValidateAgainst(device);
            if (problems.Count > 0)
            {
                throw new CompatibilityException("the device's profile catalog does not fit the device", problems);
            }
        }

        string key = recordKey ?? (options.SocketPath is { Length: > 0 } path ? AckedStateStore.DefaultKey(path)
            : "fd-" + (options.InheritedFd ?? 0).ToString(System.Globalization.CultureInfo.InvariantCulture));
        var store = stateDirectory is null ? null : new AckedStateStore(stateDirectory);
        var record = store?.Load(key);
        if (record is not null && record.DeviceType != device.DeviceType)
        {
            throw new CompatibilityException($"acked-state record {key}", [$"it is for a {VirtioFeatures.TypeLabel(record.DeviceType)} device, this backend serves {VirtioFeatures.TypeLabel(device.DeviceType)}"]);
        }

        InterfaceProfile? profile;
        bool isExplicit = true;
        if (!string.IsNullOrEmpty(pin))
        {
            profile = catalog is not null ? catalog.Resolve(pin)
                : InterfaceProfile.IsValueList(pin) ? InterfaceProfile.Parse(pin, device.DeviceType)
                : throw new ProfileFormatException(null, $"profile id '{pin}' given but the device declares no catalog; use a value list");
            if (record?.Profile is { } recorded && !recorded.SameInterface(profile))
            {
                var diff = recorded.Diff(profile).Select(d => $"{d.Key}: recorded {d.This}, pinned {d.Other}").ToList();
                throw new CompatibilityException($"pinned profile {profile} differs from profile {recorded} in acked-state record {key}", diff);
            }
        }
        else
        {
            profile = record?.Profile ?? catalog?.Latest;
            isExplicit = record?.Profile is not null && record.ProfilePinned;
        }

        ProfilePin? profilePin = null;
        if (profile is not null)
        {
            var problems = profile.CheckSupportedBy(device);
            if (profile.DeviceType != device.DeviceType)
            {
                problems = [$"profile {profile} is for {VirtioFeatures.TypeLabel(profile.DeviceType)}"];
            }

            if (problems.Count > 0)
            {
                throw new CompatibilityException($"this build cannot offer profile {profile}", problems);
            }

            profilePin = ProfilePin.Create(device, profile, isExplicit);
        }

        if (record is not null)
        {
            var offer = BackendCapabilities.FromDevice(device, options, catalog, profile);
            var problems = record.CheckHonouredBy(offer);
            if (problems.Count > 0)
            {
                throw new CompatibilityException($"this build cannot honour acked-state record {store!.PathFor(key)} (downgrade?)", [.. problems.Select(p => p.Message)]);
            }
        }

        return new CompatRuntime(device, profilePin, store, key, record);
    }

    /// <summary>The GET_FEATURES answer given what the build would offer unpinned.</summary>
    public ulong OfferedFeatures(ulong buildOffer) => Pin?.OfferedFeatures(buildOffer) ?? buildOffer;

    /// <summary>Writes the pinned config fields over a GET_CONFIG window read from the device at <paramref name="offset"/>.</summary>
    public void PatchConfig(int offset, Span<byte> window) => Pin?.PatchConfig(offset, window);

    /// <summary>
    /// Persists the negotiated state (call when the driver sets DRIVER_OK, and again when it changes):
    /// acked features, acked protocol features, ring sizes by index, the config bytes the guest can read
    /// (pinned fields included). Saving is skipped when nothing changed. Returns the current record,
    /// or null when no state directory is configured.
    /// </summary>
    /// <exception cref="AckedStateCorruptException">The stored record became damaged; it is not overwritten.</exception>
    /// <exception cref="IOException">The record could not be written (the previous one is intact).</exception>
    public AckedStateRecord? SaveNegotiated(ulong ackedFeatures, ulong ackedProtocolFeatures, IReadOnlyDictionary<int, int> queueSizes, ReadOnlySpan<byte> config)
    {
        if (_store is null)
        {
            return null;
        }

        var candidate = new AckedStateRecord(Key, _device.DeviceType, ackedFeatures, ackedProtocolFeatures, Pin?.Profile, QueueCount, queueSizes, config, profilePinned: Pin?.IsExplicit ?? false);
        if (Record is { } current && current.SameStateAs(candidate))
        {
            return current;
        }

        Record = _store.Save(candidate);
        return Record;
    }
}
