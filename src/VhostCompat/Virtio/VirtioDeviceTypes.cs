using System.Globalization;

namespace VhostCompat.Virtio;

/// <summary>
/// What the SDK knows about one virtio device type served over vhost-user.
/// </summary>
/// <param name="Type">The device id.</param>
/// <param name="Name">The backend-program <c>type</c> string (QEMU's vhost-user convention, capability documents, <c>--type</c>).</param>
/// <param name="QemuDevice">The QEMU device that is its vhost-user frontend (PCI variant), or a note when QEMU has none.</param>
/// <param name="MinQueues">Fewest virtqueues a driver uses (net: one pair; a profile's default <c>queues</c>).</param>
/// <param name="MaxQueues">Most virtqueues (255 where the device has request queues without a fixed count).</param>
/// <param name="ConfigSize">Bytes of the device config space in the virtio specification layout (0: none); what the probe reads.</param>
public sealed record VirtioDeviceTypeInfo(VirtioDeviceType Type, string Name, string QemuDevice, int MinQueues, int MaxQueues, int ConfigSize);

/// <summary>
/// The device types the SDK models (virtio specification, "Device Types"; QEMU's vhost-user frontends): names for
/// the tool and documents, queue rules for profiles, config sizes for the probe. Thread-safe.
/// </summary>
public static class VirtioDeviceTypes
{
    private static readonly VirtioDeviceTypeInfo[] Infos =
    [
        new(VirtioDeviceType.Net, "net", "virtio-net-pci with -netdev vhost-user", 2, 254, 12),
        new(VirtioDeviceType.Block, "block", "vhost-user-blk-pci", 1, 255, 60),
        new(VirtioDeviceType.Console, "console", "none (no vhost-user console in QEMU)", 2, 255, 12),
        new(VirtioDeviceType.Rng, "rng", "vhost-user-rng-pci", 1, 1, 0),
        new(VirtioDeviceType.Scsi, "scsi", "vhost-user-scsi-pci", 3, 255, 36),
        new(VirtioDeviceType.Gpu, "gpu", "vhost-user-gpu-pci, vhost-user-vga", 2, 2, 16),
        new(VirtioDeviceType.Input, "input", "vhost-user-input-pci", 2, 2, 136),
        new(VirtioDeviceType.Vsock, "vsock", "vhost-user-vsock-pci", 3, 3, 8),
        new(VirtioDeviceType.Crypto, "crypto", "virtio-crypto-pci with -object cryptodev-vhost-user", 2, 255, 0),
        new(VirtioDeviceType.Sound, "sound", "vhost-user-snd-pci", 4, 4, 16),
        new(VirtioDeviceType.Fs, "fs", "vhost-user-fs-pci", 2, 255, 40),
        new(VirtioDeviceType.Scmi, "scmi", "vhost-user-scmi-pci", 1, 2, 0),
        new(VirtioDeviceType.I2c, "i2c", "vhost-user-i2c-pci", 1, 1, 0),
        new(VirtioDeviceType.Gpio, "gpio", "vhost-user-gpio-pci", 2, 2, 8),
    ];

    private static readonly Dictionary<VirtioDeviceType, VirtioDeviceTypeInfo> ByType = Infos.ToDictionary(i => i.Type);

    private static readonly Dictionary<string, VirtioDeviceTypeInfo> ByName = BuildNames();

    /// <summary>Every modelled type, by device id.</summary>
    public static IReadOnlyList<VirtioDeviceTypeInfo> All => Infos;

    /// <summary>The names <see cref="TryParse"/> accepts: every <see cref="VirtioDeviceTypeInfo.Name"/> plus the aliases <c>blk</c> and <c>snd</c>.</summary>
    public static IReadOnlyList<string> Names { get; } = [.. Infos.Select(i => i.Name), "blk", "snd"];

    /// <summary>The info of <paramref name="type"/>, or null for a type the SDK does not model.</summary>
    public static VirtioDeviceTypeInfo? Find(VirtioDeviceType type) => ByType.GetValueOrDefault(type);

    /// <summary>The name of <paramref name="type"/> (<c>net</c>, <c>input</c>, ...), or its id in decimal when not modelled.</summary>
    public static string NameOf(VirtioDeviceType type) =>
        ByType.TryGetValue(type, out var info) ? info.Name : ((uint)type).ToString(CultureInfo.InvariantCulture);

    /// <summary>Parses a type name or alias (case-sensitive, lower case).</summary>
    public static bool TryParse(string? name, out VirtioDeviceType type)
    {
        type = default;
        if (name is not null && ByName.TryGetValue(name, out var info))
        {
            type = info.Type;
            return true;
        }

        return false;
    }

    private static Dictionary<string, VirtioDeviceTypeInfo> BuildNames()
    {
        var names = Infos.ToDictionary(i => i.Name, StringComparer.Ordinal);
        names["blk"] = ByType[VirtioDeviceType.Block];
        names["snd"] = ByType[VirtioDeviceType.Sound];
        return names;
    }
}
