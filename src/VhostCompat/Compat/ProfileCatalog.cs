using VhostCompat.Virtio;

namespace VhostCompat.Compat;

/// <summary>
/// The interface profiles a backend build supports, in publication order, and which one is the
/// latest (offered when the backend is not pinned). A catalog only grows: a published profile is
/// never removed or changed — <see cref="ProfileLock"/> enforces that. Immutable and thread-safe.
/// </summary>
public sealed class ProfileCatalog
{
    private readonly Dictionary<string, InterfaceProfile> _byId;

    /// <summary>Creates a catalog.</summary>
    /// <param name="deviceType">The device type every profile must have.</param>
    /// <param name="profiles">The supported profiles, each with an id, ids unique.</param>
    /// <param name="latestId">Id of the profile offered when none is pinned; must be in <paramref name="profiles"/>.</param>
    /// <exception cref="ArgumentException">A profile without id, a duplicate id, another device type, or an unknown latest id.</exception>
    public ProfileCatalog(VirtioDeviceType deviceType, IEnumerable<InterfaceProfile> profiles, string latestId)
    {
        ArgumentNullException.ThrowIfNull(profiles);
        ArgumentNullException.ThrowIfNull(latestId);
        DeviceType = deviceType;
        var list = profiles.ToList();
        _byId = new Dictionary<string, InterfaceProfile>(StringComparer.Ordinal);
        foreach (var p in list)
        {
            ArgumentNullException.ThrowIfNull(p, nameof(profiles));
            if (p.Id is null)
            {
                throw new ArgumentException($"catalog profile {p.Canonical} has no id", nameof(profiles));
            }

            if (p.DeviceType != deviceType)
            {
                throw new ArgumentException($"profile {p.Id} is for {VirtioFeatures.TypeLabel(p.DeviceType)}, the catalog for {VirtioFeatures.TypeLabel(deviceType)}", nameof(profiles));
            }

            if (!_byId.TryAdd(p.Id, p))
            {
                throw new ArgumentException($"profile id {p.Id} appears twice", nameof(profiles));
            }
        }

        Profiles = list;
        Latest = _byId.TryGetValue(latestId, out var latest) ? latest
            : throw new ArgumentException($"latest profile {latestId} is not in the catalog", nameof(latestId));
    }

    /// <summary>The device type.</summary>
    public VirtioDeviceType DeviceType { get; }

    /// <summary>Every supported profile, in the order given.</summary>
    public IReadOnlyList<InterfaceProfile> Profiles { get; }

    /// <summary>The profile offered when the backend is not pinned.</summary>
    public InterfaceProfile Latest { get; }

    /// <summary>
    /// Declares a catalog from <c>(id, value list)</c> pairs, e.g.
    /// <c>ProfileCatalog.Declare(VirtioDeviceType.Net, "org.example.vnet.v2", ("org.example.vnet.v1", "mrg_rxbuf=on,version_1=on"), ("org.example.vnet.v2", "..."))</c>.
    /// </summary>
    /// <exception cref="ProfileFormatException">A value list is invalid (message names the id and key).</exception>
    public static ProfileCatalog Declare(VirtioDeviceType deviceType, string latestId, params (string Id, string Values)[] profiles)
    {
        ArgumentNullException.ThrowIfNull(profiles);
        var list = new List<InterfaceProfile>();
        foreach (var (id, values) in profiles)
        {
            try
            {
                list.Add(InterfaceProfile.Parse(values, deviceType).WithId(id));
            }
            catch (ProfileFormatException ex)
            {
                throw new ProfileFormatException(ex.Key, $"profile {id}: {ex.Message}");
            }
        }

        return new ProfileCatalog(deviceType, list, latestId);
    }

    /// <summary>The profile with this id, or null.</summary>
    public InterfaceProfile? Find(string id) => _byId.TryGetValue(id, out var p) ? p : null;

    /// <summary>
    /// Resolves a pin as given on a command line: a value list (contains <c>=</c>) is parsed for
    /// this catalog's device type (and keeps the id of a catalog profile with the same values, if
    /// any); anything else is looked up as an id.
    /// </summary>
    /// <exception cref="ProfileFormatException">Invalid value list, or an id that is not in the catalog (the message lists the supported ids).</exception>
    public InterfaceProfile Resolve(string idOrValues)
    {
        ArgumentNullException.ThrowIfNull(idOrValues);
        if (InterfaceProfile.IsValueList(idOrValues))
        {
            var parsed = InterfaceProfile.Parse(idOrValues, DeviceType);
            return Profiles.FirstOrDefault(p => p.SameInterface(parsed)) ?? parsed;
        }

        return Find(idOrValues)
            ?? throw new ProfileFormatException(null, $"unknown profile id '{idOrValues}'; supported: {string.Join(", ", Profiles.Select(p => p.Id))}");
    }

    /// <summary>
    /// Every profile that asks for more than the device can do (features, ring size, queue count),
    /// one message per problem naming the profile. Empty when every profile is a subset.
    /// </summary>
    public IReadOnlyList<string> ValidateAgainst(ulong deviceFeatures, int queueCount, ushort maxQueueSize)
    {
        var problems = new List<string>();
        foreach (var p in Profiles)
        {
            foreach (string problem in p.CheckSupportedBy(deviceFeatures, queueCount, maxQueueSize))
            {
                problems.Add($"{p.Id}: {problem}");
            }
        }

        return problems;
    }

    /// <summary>Same as <see cref="ValidateAgainst(ulong, int, ushort)"/> for a described device; also checks the device type.</summary>
    internal IReadOnlyList<string> ValidateAgainst(DeviceDescription device)
    {
        ArgumentNullException.ThrowIfNull(device);
        if (device.DeviceType != DeviceType)
        {
            return [$"catalog is for {VirtioFeatures.TypeLabel(DeviceType)}, the device is {VirtioFeatures.TypeLabel(device.DeviceType)}"];
        }

        return ValidateAgainst(device.DeviceFeatures, device.QueueCount, device.MaxQueueSize);
    }
}
