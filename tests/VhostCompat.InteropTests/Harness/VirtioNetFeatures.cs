using System.Globalization;

namespace VhostCompat.InteropTests.Harness;

/// <summary>Virtio-net / vhost-user feature bits, for parsing the guest's sysfs string and readable messages.</summary>
public static class VirtioNetFeatures
{
    public const int VhostFLogAll = 26;
    public const int VhostUserFProtocolFeatures = 30;

    private static readonly Dictionary<int, string> Names = new()
    {
        [0] = "CSUM", [1] = "GUEST_CSUM", [2] = "CTRL_GUEST_OFFLOADS", [3] = "MTU", [5] = "MAC", [6] = "GSO",
        [7] = "GUEST_TSO4", [8] = "GUEST_TSO6", [9] = "GUEST_ECN", [10] = "GUEST_UFO", [11] = "HOST_TSO4",
        [12] = "HOST_TSO6", [13] = "HOST_ECN", [14] = "HOST_UFO", [15] = "MRG_RXBUF", [16] = "STATUS",
        [17] = "CTRL_VQ", [18] = "CTRL_RX", [19] = "CTRL_VLAN", [20] = "CTRL_RX_EXTRA", [21] = "GUEST_ANNOUNCE",
        [22] = "MQ", [23] = "CTRL_MAC_ADDR", [24] = "NOTIFY_ON_EMPTY", [26] = "LOG_ALL", [27] = "ANY_LAYOUT",
        [28] = "RING_INDIRECT_DESC", [29] = "RING_EVENT_IDX", [30] = "PROTOCOL_FEATURES", [32] = "VERSION_1",
        [33] = "ACCESS_PLATFORM", [34] = "RING_PACKED", [35] = "IN_ORDER", [36] = "ORDER_PLATFORM",
        [37] = "SR_IOV", [38] = "NOTIFICATION_DATA", [39] = "NOTIF_CONFIG_DATA", [40] = "RING_RESET",
        [52] = "VQ_NOTF_COAL", [53] = "NOTF_COAL", [54] = "GUEST_USO4", [55] = "GUEST_USO6", [56] = "HOST_USO",
        [57] = "HASH_REPORT", [59] = "GUEST_HDRLEN", [60] = "RSS", [61] = "RSC_EXT", [62] = "STANDBY", [63] = "SPEED_DUPLEX",
    };

    public static ulong Bit(int n) => 1UL << n;

    /// <summary>Linux sysfs 'features': one '0'/'1' per bit, bit 0 first.</summary>
    public static ulong FromBitString(string bits)
    {
        ArgumentNullException.ThrowIfNull(bits);
        ulong v = 0;
        for (var i = 0; i < bits.Length && i < 64; i++)
        {
            if (bits[i] == '1')
            {
                v |= 1UL << i;
            }
            else if (bits[i] != '0')
            {
                throw new FormatException($"not a feature bit string: '{bits}'");
            }
        }

        return v;
    }

    /// <summary>"0x1f" / "1f" / "0X1F" -> value.</summary>
    public static ulong ParseHex(string hex)
    {
        ArgumentNullException.ThrowIfNull(hex);
        var s = hex.Trim();
        if (s.StartsWith("0x", StringComparison.OrdinalIgnoreCase))
        {
            s = s[2..];
        }

        return ulong.Parse(s, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);
    }

    public static string Hex(ulong v) => "0x" + v.ToString("x", CultureInfo.InvariantCulture);

    /// <summary>"0x130afe7a7 (CSUM GUEST_CSUM ...)"</summary>
    public static string Describe(ulong v)
    {
        var names = Enumerable.Range(0, 64).Where(b => (v & (1UL << b)) != 0)
            .Select(b => Names.TryGetValue(b, out var n) ? n : "bit" + b.ToString(CultureInfo.InvariantCulture));
        return Hex(v) + " (" + string.Join(' ', names) + ")";
    }
}
