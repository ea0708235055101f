using System.Buffers.Binary;
using VhostCompat.Virtio;

namespace VhostCompat.Compat;

/// <summary>
/// A device pinned to an interface profile: what the backend session must answer instead of the
/// device's own capability. GET_FEATURES = <see cref="OfferedFeatures"/>, GET_QUEUE_NUM =
/// <see cref="QueueNumReply"/>, ring indices &lt; <see cref="QueueCount"/>, SET_VRING_NUM ≤
/// <see cref="MaxRingSize"/>, GET_CONFIG bytes passed through <see cref="PatchConfig"/>.
/// </summary>
internal sealed class ProfilePin
{
    private ProfilePin(InterfaceProfile profile, bool isExplicit)
    {
        Profile = profile;
        IsExplicit = isExplicit;
    }

    /// <summary>
    /// True when management chose the profile (<c>--compat-profile</c>, or a record made under such a pin);
    /// false when the backend offers its catalog's latest on its own. Recorded, because the preflight then
    /// holds a destination to the profile only in the first case, and to what the guest acked in both.
    /// </summary>
    public bool IsExplicit { get; }

    public InterfaceProfile Profile { get; }

    /// <summary>Virtqueues served under the pin (ring indices at or above it are refused).</summary>
    public int QueueCount => Profile.Queues;

    /// <summary>Ring size limit under the pin.</summary>
    public ushort MaxRingSize => Profile.MaxRingSize;

    /// <summary>GET_QUEUE_NUM under the pin (queue pairs for net, virtqueues otherwise).</summary>
    public ulong QueueNumReply => Profile.QueueNumReply;

    /// <summary>GET_PROTOCOL_FEATURES under the pin: without DEVICE_STATE when the profile says <c>device_state=off</c>.</summary>
    public VhostUserProtocolFeatures OfferedProtocolFeatures(VhostUserProtocolFeatures offered) =>
        Profile.DeviceState == false ? offered & ~VhostUserProtocolFeatures.DeviceState : offered;

    /// <summary>
    /// Pins the described device to <paramref name="profile"/>.
    /// </summary>
    /// <exception cref="ProfileFormatException">Another device type, or the profile asks for more than the device can do (every problem listed).</exception>
    public static ProfilePin Create(DeviceDescription device, InterfaceProfile profile, bool isExplicit = true)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(profile);
        if (profile.DeviceType != device.DeviceType)
        {
            throw new ProfileFormatException("type", $"profile {profile} is for {VirtioFeatures.TypeLabel(profile.DeviceType)}, the device is {VirtioFeatures.TypeLabel(device.DeviceType)}");
        }

        var problems = DeviceOffer.SupportProblems(device, profile);
        if (problems.Count > 0)
        {
            throw new ProfileFormatException(null, $"this build cannot offer profile {profile}: {string.Join("; ", problems)}");
        }

        return new ProfilePin(profile, isExplicit);
    }

    /// <summary>
    /// Pins a backend known only by its offer (a backend behind the proxy, a probed one) to <paramref name="profile"/>:
    /// the same rules as <see cref="Create"/>, checked against what the backend offers instead of a device's declaration.
    /// </summary>
    /// <exception cref="ProfileFormatException">Another device type, or the profile asks for more than the offer (every problem listed).</exception>
    public static ProfilePin ForOffer(BackendCapabilities offer, InterfaceProfile profile, bool isExplicit = true)
    {
        ArgumentNullException.ThrowIfNull(offer);
        ArgumentNullException.ThrowIfNull(profile);
        var problems = SupportProblems(offer, profile);
        if (problems.Count > 0)
        {
            throw new ProfileFormatException(profile.DeviceType != offer.DeviceType ? "type" : null, $"the backend cannot offer profile {profile}: {string.Join("; ", problems)}");
        }

        return new ProfilePin(profile, isExplicit);
    }

    /// <summary>Everything <paramref name="profile"/> asks for that <paramref name="offer"/> cannot provide; empty when it can.</summary>
    public static IReadOnlyList<string> SupportProblems(BackendCapabilities offer, InterfaceProfile profile)
    {
        ArgumentNullException.ThrowIfNull(offer);
        ArgumentNullException.ThrowIfNull(profile);
        if (profile.DeviceType != offer.DeviceType)
        {
            return [$"profile {profile} is for {VirtioFeatures.TypeLabel(profile.DeviceType)}, the backend is {VirtioFeatures.TypeLabel(offer.DeviceType)}"];
        }

        var problems = profile.CheckSupportedBy(offer.VirtioFeatures, offer.Queues, (ushort)Math.Clamp(offer.MaxQueueSize, 0, ushort.MaxValue));
        return profile.DeviceState == true && (offer.ProtocolFeatures & (ulong)VhostUserProtocolFeatures.DeviceState) == 0
            ? [.. problems, "device_state=on, but the backend does not offer DEVICE_STATE"]
            : problems;
    }

    /// <summary>
    /// Resolves what a backend should offer: <paramref name="pin"/> (an id or a value list, e.g. from
    /// <c>--compat-profile</c>) through <paramref name="catalog"/>; without a pin the catalog's latest;
    /// null when there is neither (the device's whole capability is offered).
    /// </summary>
    /// <exception cref="ProfileFormatException">Unknown id, invalid value list, or a profile the device cannot offer.</exception>
    public static ProfilePin? Resolve(DeviceDescription device, ProfileCatalog? catalog, string? pin)
    {
        ArgumentNullException.ThrowIfNull(device);
        InterfaceProfile? profile = null;
        if (!string.IsNullOrEmpty(pin))
        {
            if (catalog is not null)
            {
                profile = catalog.Resolve(pin);
            }
            else if (InterfaceProfile.IsValueList(pin))
            {
                profile = InterfaceProfile.Parse(pin, device.DeviceType);
            }
            else
            {
                throw new ProfileFormatException(null, $"profile id '{pin}' given but the device declares no catalog; use a value list");
            }
        }
        else
        {
            profile = catalog?.Latest;
        }

        return profile is null ? null : Create(device, profile, isExplicit: !string.IsNullOrEmpty(pin));
    }

    /// <summary>The GET_FEATURES answer: the build's vhost-only bits (protocol features, log-all) plus exactly the profile's bits.</summary>
    public ulong OfferedFeatures(ulong buildOffer) => (buildOffer & VirtioFeatures.VhostOnlyMask) | Profile.Features;

    /// <summary>
    /// Overwrites the guest-visible config fields the profile pins inside a GET_CONFIG window that
    /// starts at <paramref name="offset"/>: net <c>max_virtqueue_pairs</c> (@8, with mq) and
    /// <c>mtu</c> (@10); block <c>capacity</c> (@0), <c>blk_size</c> (@20) and <c>num_queues</c> (@34, with mq).
    /// </summary>
    public void PatchConfig(int offset, Span<byte> window)
    {
        switch (Profile.DeviceType)
        {
            case VirtioDeviceType.Net:
                if ((Profile.Features & VirtioFeatureBits.NetMq) != 0)
                {
                    Patch16(window, offset, 8, (ushort)(Profile.Queues / 2));
                }

                if (Profile.Mtu is { } mtu)
                {
                    Patch16(window, offset, 10, mtu);
                }

                break;
            case VirtioDeviceType.Block:
                if (Profile.Capacity is { } cap)
                {
                    Span<byte> b = stackalloc byte[8];
                    BinaryPrimitives.WriteUInt64LittleEndian(b, cap);
                    PatchBytes(window, offset, 0, b);
                }

                if (Profile.BlockSize is { } bs)
                {
                    Span<byte> b = stackalloc byte[4];
                    BinaryPrimitives.WriteUInt32LittleEndian(b, bs);
                    PatchBytes(window, offset, 20, b);
                }

                if ((Profile.Features & (1UL << 12)) != 0)
                {
                    Patch16(window, offset, 34, (ushort)Profile.Queues);
                }

                break;
        }
    }

    /// <summary>
    /// Decoded config fields (<c>mtu</c>, <c>capacity</c>, <c>blk_size</c>) with the values this pin sets written over
    /// them: what <see cref="PatchConfig"/> does to the bytes, for a backend known only by its decoded fields (a probe).
    /// </summary>
    public IReadOnlyDictionary<string, string> OverlayFields(IReadOnlyDictionary<string, string> fields)
    {
        var result = new SortedDictionary<string, string>(fields.ToDictionary(), StringComparer.Ordinal);
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        switch (Profile.DeviceType)
        {
            case VirtioDeviceType.Net when Profile.Mtu is { } mtu:
                result["mtu"] = mtu.ToString(inv);
                break;
            case VirtioDeviceType.Block:
                if (Profile.Capacity is { } cap)
                {
                    result["capacity"] = cap.ToString(inv);
                }

                if (Profile.BlockSize is { } bs)
                {
                    result["blk_size"] = bs.ToString(inv);
                }

                break;
        }

        return result;
    }

    private static void Patch16(Span<byte> window, int windowOffset, int fieldOffset, ushort value)
    {
        Span<byte> b = stackalloc byte[2];
        BinaryPrimitives.WriteUInt16LittleEndian(b, value);
        PatchBytes(window, windowOffset, fieldOffset, b);
    }

    // Copies the part of a field that overlaps the window [windowOffset, windowOffset + window.Length).
    private static void PatchBytes(Span<byte> window, int windowOffset, int fieldOffset, ReadOnlySpan<byte> field)
    {
        long start = Math.Max(windowOffset, fieldOffset);
        long end = Math.Min((long)windowOffset + window.Length, (long)fieldOffset + field.Length);
        for (long i = start; i < end; i++)
        {
            window[(int)(i - windowOffset)] = field[(int)(i - fieldOffset)];
        }
    }
}
