using System.Buffers.Binary;
using System.Globalization;

namespace VhostCompat.Virtio;

/// <summary>
/// Decodes the guest-visible fields of a device config space (net, block, gpu, sound, gpio) into
/// name/value text, so that two config spaces can be compared field by field. Only fields that
/// the negotiated features make visible and the bytes cover are returned. Fields the frontend
/// overrides (net MAC and queue pairs, block num_queues) are left out.
/// </summary>
internal static class VirtioConfigFields
{
    /// <summary>Largest config space this SDK serves or records (virtio-blk's is 60+ bytes, virtio-input's 136).</summary>
    public const int MaxConfigSize = 256;

    public static SortedDictionary<string, string> Decode(VirtioDeviceType type, ulong features, ReadOnlySpan<byte> config)
    {
        var fields = new SortedDictionary<string, string>(StringComparer.Ordinal);
        switch (type)
        {
            case VirtioDeviceType.Net:
                if ((features & VirtioFeatureBits.NetMtu) != 0 && config.Length >= 12)
                {
                    fields["mtu"] = U(BinaryPrimitives.ReadUInt16LittleEndian(config[10..]));
                }

                break;
            case VirtioDeviceType.Block:
                if (config.Length >= 8)
                {
                    fields["capacity"] = U(BinaryPrimitives.ReadUInt64LittleEndian(config));
                }

                if ((features & VirtioFeatureBits.BlockSizeMax) != 0 && config.Length >= 12)
                {
                    fields["size_max"] = U(BinaryPrimitives.ReadUInt32LittleEndian(config[8..]));
                }

                if ((features & VirtioFeatureBits.BlockSegMax) != 0 && config.Length >= 16)
                {
                    fields["seg_max"] = U(BinaryPrimitives.ReadUInt32LittleEndian(config[12..]));
                }

                if ((features & VirtioFeatureBits.BlockBlkSize) != 0 && config.Length >= 24)
                {
                    fields["blk_size"] = U(BinaryPrimitives.ReadUInt32LittleEndian(config[20..]));
                }

                break;
            case VirtioDeviceType.Gpu when config.Length >= 16: // events_read, events_clear, num_scanouts, num_capsets
                fields["num_scanouts"] = U(BinaryPrimitives.ReadUInt32LittleEndian(config[8..]));
                fields["num_capsets"] = U(BinaryPrimitives.ReadUInt32LittleEndian(config[12..]));
                break;
            case VirtioDeviceType.Sound when config.Length >= 12: // jacks, streams, chmaps (, controls with ctls)
                fields["jacks"] = U(BinaryPrimitives.ReadUInt32LittleEndian(config));
                fields["streams"] = U(BinaryPrimitives.ReadUInt32LittleEndian(config[4..]));
                fields["chmaps"] = U(BinaryPrimitives.ReadUInt32LittleEndian(config[8..]));
                if ((features & 1) != 0 && config.Length >= 16)
                {
                    fields["controls"] = U(BinaryPrimitives.ReadUInt32LittleEndian(config[12..]));
                }

                break;
            case VirtioDeviceType.Gpio when config.Length >= 8: // ngpio, padding, gpio_names_size
                fields["ngpio"] = U(BinaryPrimitives.ReadUInt16LittleEndian(config));
                break;
        }

        return fields;
    }

    private static string U(ulong v) => v.ToString(CultureInfo.InvariantCulture);
}
