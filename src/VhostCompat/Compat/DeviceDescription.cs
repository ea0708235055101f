using VhostCompat.Virtio;

namespace VhostCompat.Compat;

/// <summary>
/// What a device implementation declares it can do, as plain values: the input of the offer resolver. The backend
/// builds it from the device contract (<c>VhostUserDevice</c>); Compat never sees the device itself.
/// </summary>
/// <param name="DeviceType">Virtio device type.</param>
/// <param name="DeviceFeatures">Virtio feature bits the implementation supports (without the vhost-only bits).</param>
/// <param name="ProtocolFeatures">Device-specific protocol features the device opts into (CONFIG, MTU, ...).</param>
/// <param name="QueueCount">Virtqueues the device serves (1..255).</param>
/// <param name="QueueNumReply">Its GET_QUEUE_NUM answer (queue pairs for net).</param>
/// <param name="MaxQueueSize">Largest ring size it accepts.</param>
/// <param name="Config">Its config space from offset 0, as read when described (at most <see cref="VirtioConfigFields.MaxConfigSize"/> bytes).</param>
/// <param name="StateVersion">Version of its device-state format; 0 = no state to transfer.</param>
/// <param name="LoadableStateVersions">State formats it loads.</param>
/// <param name="Catalog">The profiles it publishes, or null.</param>
internal sealed record DeviceDescription(
    VirtioDeviceType DeviceType,
    ulong DeviceFeatures,
    VhostUserProtocolFeatures ProtocolFeatures,
    int QueueCount,
    ulong QueueNumReply,
    ushort MaxQueueSize,
    byte[] Config,
    uint StateVersion,
    IReadOnlyList<uint> LoadableStateVersions,
    ProfileCatalog? Catalog);

/// <summary>How the backend serves memory: the only serving options that change what is offered.</summary>
/// <param name="OfferMemorySlots">CONFIGURE_MEM_SLOTS is offered.</param>
/// <param name="MaxMemorySlots">GET_MAX_MEM_SLOTS when it is.</param>
internal readonly record struct MemorySlotOffer(bool OfferMemorySlots, int MaxMemorySlots);

/// <summary>
/// The one computation of what an SDK backend offers: GET_FEATURES, GET_PROTOCOL_FEATURES, queues, ring limit,
/// GET_QUEUE_NUM and config, for a described device under an optional pin. The session serves this object and the
/// capability document renders it.
/// </summary>
internal static class DeviceOffer
{
    /// <summary>Protocol features the SDK can serve when the device asks for them.</summary>
    public const VhostUserProtocolFeatures DeviceSelectable =
        VhostUserProtocolFeatures.Config | VhostUserProtocolFeatures.BackendReq | VhostUserProtocolFeatures.Mtu | VhostUserProtocolFeatures.Rarp
        | VhostUserProtocolFeatures.InflightShmfd;

    /// <summary>The protocol features the SDK implements for every device.</summary>
    public const VhostUserProtocolFeatures Always = VhostUserProtocolFeatures.Mq | VhostUserProtocolFeatures.ReplyAck | VhostUserProtocolFeatures.Status
        | VhostUserProtocolFeatures.LogShmfd | VhostUserProtocolFeatures.ResetDevice;

    /// <summary>GET_FEATURES without a pin: the device's bits plus the vhost-only bits the SDK implements.</summary>
    public static ulong Features(ulong deviceFeatures) =>
        (deviceFeatures & ~(VirtioFeatureBits.LogAll | VirtioFeatureBits.ProtocolFeatures)) | VirtioFeatureBits.ProtocolFeatures | VirtioFeatureBits.LogAll;

    /// <summary>GET_PROTOCOL_FEATURES: what the SDK implements, the device's own bits, and the pin's restrictions.</summary>
    public static VhostUserProtocolFeatures ProtocolFeatures(VhostUserProtocolFeatures deviceOptIn, uint stateVersion, bool offerMemorySlots, ProfilePin? pin)
    {
        var p = Always | (deviceOptIn & DeviceSelectable);
        if (offerMemorySlots)
        {
            p |= VhostUserProtocolFeatures.ConfigureMemSlots;
        }

        if (stateVersion != 0)
        {
            p |= VhostUserProtocolFeatures.DeviceState;
        }

        return pin?.OfferedProtocolFeatures(p) ?? p;
    }

    /// <summary>The offer of <paramref name="device"/> served with <paramref name="slots"/>, under <paramref name="pin"/> when given.</summary>
    public static BackendCapabilities For(DeviceDescription device, MemorySlotOffer slots, ProfilePin? pin, ProfileCatalog? catalog)
    {
        ArgumentNullException.ThrowIfNull(device);
        ulong features = Features(device.DeviceFeatures);
        ulong protocol = (ulong)ProtocolFeatures(device.ProtocolFeatures, device.StateVersion, slots.OfferMemorySlots, pin);
        int queues = device.QueueCount;
        int maxRing = device.MaxQueueSize;
        ulong queueNum = device.QueueNumReply;
        byte[] config = (byte[])device.Config.Clone();
        if (pin is not null)
        {
            features = pin.OfferedFeatures(features);
            queues = pin.QueueCount;
            maxRing = pin.MaxRingSize;
            queueNum = pin.QueueNumReply;
            pin.PatchConfig(0, config);
        }

        var fields = VirtioConfigFields.Decode(device.DeviceType, features, config);
        return new BackendCapabilities(device.DeviceType, features, protocol, queues, maxRing, config.Length, fields, catalog,
            slots.OfferMemorySlots ? slots.MaxMemorySlots : 8, queueNum)
        {
            DeviceStateVersions = (protocol & (ulong)VhostUserProtocolFeatures.DeviceState) != 0 ? [.. device.LoadableStateVersions.Distinct().Order()] : [],
        };
    }

    /// <summary>
    /// Everything <paramref name="profile"/> asks for that <paramref name="device"/> cannot provide (features by name,
    /// ring size, queues, device state); empty when the profile is a subset of the device's capability.
    /// </summary>
    public static IReadOnlyList<string> SupportProblems(DeviceDescription device, InterfaceProfile profile)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(profile);
        var problems = profile.CheckSupportedBy(device.DeviceFeatures, device.QueueCount, device.MaxQueueSize);
        return profile.DeviceState == true && device.StateVersion == 0
            ? [.. problems, "device_state=on, but the device has no state to transfer (StateVersion 0)"]
            : problems;
    }
}
