using System.Text;
using System.Text.Json;
using VhostCompat.Backend;
using VhostCompat.Virtio;

namespace VhostCompat.Compat;

/// <summary>
/// The capability document a backend prints for <c>--print-capabilities</c>: QEMU's
/// backend-program JSON (<c>type</c>, <c>features</c>) extended with a <c>vhostcompat</c> object
/// holding the virtio and protocol features the backend offers and its limits.
/// </summary>
public static class CapabilityDocument
{
    /// <summary>Version of the <c>vhostcompat</c> object's schema.</summary>
    public const int SchemaVersion = 1;

    /// <summary>Renders the document for a device served with the given options.</summary>
    public static string Render(VhostUserDevice device, VhostUserBackendOptions options)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(options);
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("type", TypeName(device.DeviceType));
            w.WriteStartArray("features");
            w.WriteEndArray();
            w.WriteStartObject("vhostcompat");
            w.WriteNumber("schema-version", SchemaVersion);
            w.WriteNumber("device-id", (uint)device.DeviceType);
            w.WriteString("virtio-features", $"0x{BackendSession.OfferedFeatures(device):x}");
            w.WriteString("protocol-features", $"0x{(ulong)BackendSession.OfferedProtocolFeatures(device, options):x}");
            w.WriteNumber("queues", device.QueueCount);
            w.WriteNumber("max-queue-size", device.MaxQueueSize);
            w.WriteNumber("config-size", device.ConfigSize);
            w.WriteNumber("max-memory-slots", options.OfferMemorySlots ? options.MaxMemorySlots : 8);
            w.WriteEndObject();
            w.WriteEndObject();
        }

        return Encoding.UTF8.GetString(stream.ToArray());
    }

    /// <summary>The backend-program <c>type</c> string QEMU and libvirt use for a device type.</summary>
    public static string TypeName(VirtioDeviceType type) => type switch
    {
        VirtioDeviceType.Net => "net",
        VirtioDeviceType.Block => "block",
        VirtioDeviceType.Rng => "rng",
        VirtioDeviceType.Gpu => "gpu",
        VirtioDeviceType.Fs => "fs",
        VirtioDeviceType.Input => "input",
        VirtioDeviceType.Scsi => "scsi",
        VirtioDeviceType.Vsock => "vsock",
        VirtioDeviceType.Gpio => "gpio",
        VirtioDeviceType.Console => "console",
        _ => ((uint)type).ToString(System.Globalization.CultureInfo.InvariantCulture),
    };
}
