using VhostCompat.Virtio;

namespace VhostCompat.Compat;

/// <summary>
/// What a backend presents once the operator's pin, its catalog and the saved acked-state record are applied to
/// what it can do: the pin (null = the whole capability), the resulting offer, and every reason it cannot be served.
/// </summary>
/// <param name="Pin">The pin, or null when nothing restricts the offer.</param>
/// <param name="Offer">What the frontend is offered (GET_FEATURES, protocol features, queues, ring limit, config).</param>
/// <param name="Problems">Every refusal, one sentence each (feature bits by name); empty when the offer can be served.</param>
internal sealed record ResolvedOffer(ProfilePin? Pin, BackendCapabilities Offer, IReadOnlyList<string> Problems)
{
    /// <summary>True when nothing stands in the way.</summary>
    public bool Servable => Problems.Count == 0;
}

/// <summary>
/// The one place that turns (what a backend can do, catalog, pin, saved record) into what it offers. Pure: no I/O.
/// The rules: an explicit pin wins, but must equal the record's profile when the record has one; without a pin the
/// record's profile is served again (the interface the guest already has), else — when asked — the catalog's latest;
/// the profile must fit the capability; the record must be honoured by the resulting offer.
/// </summary>
internal static class OfferResolver
{
    /// <summary>Resolves the offer.</summary>
    /// <param name="capability">What the backend offers on its own (a device's declaration or a live backend's answers).</param>
    /// <param name="config">The backend's config space from offset 0 (empty when unknown); pinned fields are written over a copy.</param>
    /// <param name="catalog">Resolves profile ids; null = value lists only.</param>
    /// <param name="pin">The operator's pin (id or value list), or null.</param>
    /// <param name="record">The saved acked-state record, or null.</param>
    /// <param name="catalogLatestByDefault">Without a pin or a recorded profile, serve the catalog's latest (SDK backends do; the proxy stays transparent).</param>
    /// <param name="considered">Which of the record's findings count (a live backend whose ring limit or config was not probed skips those); null = all.</param>
    /// <exception cref="ProfileFormatException">The pin is not a valid value list, or an id the catalog does not hold.</exception>
    public static ResolvedOffer Resolve(BackendCapabilities capability, ReadOnlySpan<byte> config, ProfileCatalog? catalog, string? pin, AckedStateRecord? record,
        bool catalogLatestByDefault, Func<PreflightFinding, bool>? considered = null)
    {
        ArgumentNullException.ThrowIfNull(capability);
        var problems = new List<string>();
        if (record is not null && record.DeviceType != capability.DeviceType)
        {
            problems.Add($"acked-state record {record.Key} is for a {VirtioFeatures.TypeLabel(record.DeviceType)} device, the backend serves {VirtioFeatures.TypeLabel(capability.DeviceType)}");
            return new ResolvedOffer(null, capability, problems);
        }

        InterfaceProfile? profile;
        bool isExplicit;
        if (!string.IsNullOrEmpty(pin))
        {
            profile = catalog is not null ? catalog.Resolve(pin)
                : InterfaceProfile.IsValueList(pin) ? InterfaceProfile.Parse(pin, capability.DeviceType)
                : throw new ProfileFormatException(null, $"profile id '{pin}' given but there is no catalog; use a value list");
            isExplicit = true;
            if (record?.Profile is { } recorded && !recorded.SameInterface(profile))
            {
                problems.AddRange(profile.Diff(recorded).Select(d => $"pinned profile {profile} differs from acked-state record {record.Key}: {d.Key} pinned {d.This}, recorded {d.Other}"));
            }
        }
        else
        {
            profile = record?.Profile ?? (catalogLatestByDefault ? catalog?.Latest : null);
            isExplicit = record?.Profile is not null && record.ProfilePinned;
        }

        ProfilePin? profilePin = null;
        BackendCapabilities offer = capability;
        if (profile is not null)
        {
            var unsupported = ProfilePin.SupportProblems(capability, profile);
            if (unsupported.Count > 0)
            {
                problems.AddRange(unsupported.Select(u => $"profile {profile}: {u}"));
                return new ResolvedOffer(null, capability, problems);
            }

            profilePin = ProfilePin.ForOffer(capability, profile, isExplicit);
            offer = Apply(capability, config, profilePin);
        }

        if (record is not null)
        {
            problems.AddRange(record.CheckHonouredBy(offer).Where(f => considered?.Invoke(f) ?? true).Select(f => f.Message));
        }

        return new ResolvedOffer(profilePin, offer, problems);
    }

    /// <summary>The offer <paramref name="capability"/> makes under <paramref name="pin"/>.</summary>
    public static BackendCapabilities Apply(BackendCapabilities capability, ReadOnlySpan<byte> config, ProfilePin pin)
    {
        ArgumentNullException.ThrowIfNull(capability);
        ArgumentNullException.ThrowIfNull(pin);
        ulong features = pin.OfferedFeatures(capability.VirtioFeatures);
        byte[] patched = config.ToArray();
        pin.PatchConfig(0, patched);
        var fields = patched.Length > 0 ? VirtioConfigFields.Decode(capability.DeviceType, features, patched) : pin.OverlayFields(capability.Config);
        return new BackendCapabilities(capability.DeviceType, features, (ulong)pin.OfferedProtocolFeatures((VhostCompat.Virtio.VhostUserProtocolFeatures)capability.ProtocolFeatures),
            pin.QueueCount, pin.MaxRingSize, capability.ConfigSize, fields, capability.Catalog, capability.MaxMemorySlots, pin.QueueNumReply)
        {
            Frontend = capability.Frontend,
            DeviceStateVersions = capability.DeviceStateVersions,
        };
    }
}
