using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Backend;

/// <summary>
/// The compatibility layer's entry points for a device written against <see cref="VhostUserDevice"/>. They live on
/// the backend side so that Compat stays pure policy: each one describes the device as plain values
/// (<c>DeviceDescription</c>) and hands that to Compat, so a device, a capability document and a probed backend are
/// all judged by the same code. Used as <c>CapabilityDocument.Render(device, options)</c>,
/// <c>profile.CheckSupportedBy(device)</c>, and so on.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Naming", "CA1708", Justification = "The analyzer compares the compiler-generated names of C# 14 extension blocks, which differ only by the extended type.")]
public static class DeviceCompat
{
    /// <summary>Entry points on <see cref="CapabilityDocument"/>.</summary>
    extension(CapabilityDocument)
    {
        /// <summary>Renders the document for a device served with the given options (no catalog).</summary>
        public static string Render(VhostUserDevice device, VhostUserBackendOptions options) => Render(device, options, null);

        /// <summary>Renders the document for a device served with the given options and its profile catalog.</summary>
        /// <exception cref="ArgumentException">The catalog is for another device type or asks for more than the device can do.</exception>
        public static string Render(VhostUserDevice device, VhostUserBackendOptions options, ProfileCatalog? catalog)
        {
            ArgumentNullException.ThrowIfNull(device);
            ArgumentNullException.ThrowIfNull(options);
            var description = Describe(device);
            if (catalog is not null)
            {
                var problems = catalog.ValidateAgainst(description);
                if (problems.Count > 0)
                {
                    throw new ArgumentException("profile catalog does not fit the device: " + string.Join("; ", problems), nameof(catalog));
                }
            }

            return CapabilityDocument.Render(DeviceOffer.For(description, SlotsOf(options), null, catalog));
        }
    }

    /// <summary>Entry points on <see cref="BackendCapabilities"/>.</summary>
    extension(BackendCapabilities)
    {
        /// <summary>
        /// What <paramref name="device"/> offers when served with <paramref name="options"/>: its whole
        /// capability, or — when <paramref name="pinned"/> is given — exactly that profile.
        /// </summary>
        /// <exception cref="ProfileFormatException">The pinned profile asks for more than the device can do.</exception>
        public static BackendCapabilities FromDevice(VhostUserDevice device, VhostUserBackendOptions options, ProfileCatalog? catalog = null, InterfaceProfile? pinned = null)
        {
            ArgumentNullException.ThrowIfNull(device);
            ArgumentNullException.ThrowIfNull(options);
            var description = Describe(device);
            var pin = pinned is null ? null : ProfilePin.Create(description, pinned);
            return DeviceOffer.For(description, SlotsOf(options), pin, catalog);
        }
    }

    /// <summary>Entry points on <see cref="InterfaceProfile"/>.</summary>
    extension(InterfaceProfile)
    {
        /// <summary>
        /// The full capability of a device as a profile: its <see cref="VhostUserDevice.DeviceFeatures"/>
        /// (known, non-vhost-only bits), <see cref="VhostUserDevice.MaxQueueSize"/> and
        /// <see cref="VhostUserDevice.QueueCount"/>. Config values are not pinned.
        /// </summary>
        /// <exception cref="ProfileFormatException">The device's own features break a rule.</exception>
        public static InterfaceProfile FromDevice(VhostUserDevice device, string? id = null)
        {
            ArgumentNullException.ThrowIfNull(device);
            return InterfaceProfile.FromDescription(Describe(device), id);
        }
    }

    /// <summary>Checks of a profile against a device.</summary>
    /// <param name="profile">The profile.</param>
    extension(InterfaceProfile profile)
    {
        /// <summary>Everything the profile asks for that the device's declared capability cannot provide; empty when it is a subset.</summary>
        public IReadOnlyList<string> CheckSupportedBy(VhostUserDevice device)
        {
            ArgumentNullException.ThrowIfNull(device);
            return DeviceOffer.SupportProblems(Describe(device), profile);
        }
    }

    /// <summary>Checks of a catalog against a device.</summary>
    /// <param name="catalog">The catalog.</param>
    extension(ProfileCatalog catalog)
    {
        /// <summary>Every profile that asks for more than the device can do, and a wrong device type; empty when all fit.</summary>
        public IReadOnlyList<string> ValidateAgainst(VhostUserDevice device)
        {
            ArgumentNullException.ThrowIfNull(device);
            return catalog.ValidateAgainst(Describe(device));
        }
    }

    /// <summary>The device's declaration as plain values, its config read from offset 0.</summary>
    internal static DeviceDescription Describe(VhostUserDevice device)
    {
        byte[] config = new byte[Math.Clamp(device.ConfigSize, 0, VirtioConfigFields.MaxConfigSize)];
        device.ReadConfig(0, config);
        return new DeviceDescription(device.DeviceType, device.DeviceFeatures, device.ProtocolFeatures, device.QueueCount, device.QueueNumReply,
            device.MaxQueueSize, config, device.StateVersion, device.LoadableStateVersions, device.Catalog);
    }

    internal static MemorySlotOffer SlotsOf(VhostUserBackendOptions options) => new(options.OfferMemorySlots, options.MaxMemorySlots);
}

/// <summary>Pins for a device (internal: the backend and the tests use them).</summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Naming", "CA1708", Justification = "See DeviceCompat.")]
internal static class DevicePins
{
    extension(ProfilePin)
    {
        /// <summary>Pins <paramref name="device"/> to <paramref name="profile"/>.</summary>
        /// <exception cref="ProfileFormatException">Another device type, or the profile asks for more than the device can do.</exception>
        public static ProfilePin Create(VhostUserDevice device, InterfaceProfile profile, bool isExplicit = true) =>
            ProfilePin.Create(DeviceCompat.Describe(device), profile, isExplicit);

        /// <summary>The pin <paramref name="pin"/> (or the catalog's latest) for <paramref name="device"/>; null when there is neither.</summary>
        /// <exception cref="ProfileFormatException">Unknown id, invalid value list, or a profile the device cannot offer.</exception>
        public static ProfilePin? Resolve(VhostUserDevice device, ProfileCatalog? catalog, string? pin) =>
            ProfilePin.Resolve(DeviceCompat.Describe(device), catalog, pin);
    }
}
