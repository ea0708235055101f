using System.Globalization;
using VhostCompat.Virtio;

namespace VhostCompat.Compat;

/// <summary>
/// Lower-case names of the vhost-user protocol feature bits (GET/SET_PROTOCOL_FEATURES): the
/// specification's names without the <c>VHOST_USER_PROTOCOL_F_</c> prefix (<c>mq</c>,
/// <c>reply_ack</c>, <c>backend_req</c>, ...); bits without a name are written <c>bitN</c>.
/// </summary>
public static class ProtocolFeatureNames
{
    private static readonly string[] Names =
    [
        "mq", "log_shmfd", "rarp", "reply_ack", "mtu", "backend_req", "cross_endian", "crypto_session",
        "pagefault", "config", "backend_send_fd", "host_notifier", "inflight_shmfd", "reset_device",
        "inband_notifications", "configure_mem_slots", "status", "xen_mmap", "shared_object", "device_state",
        "get_vring_base_inflight", "gpa_addresses", "shmem", "get_vring_base_skip_drain",
    ];

    /// <summary>The name of bit <paramref name="bit"/> (0..63).</summary>
    public static string NameOf(int bit) => (uint)bit < (uint)Names.Length ? Names[bit] : "bit" + bit.ToString(CultureInfo.InvariantCulture);

    /// <summary>The names of the bits set in <paramref name="features"/>, ascending by bit.</summary>
    public static IReadOnlyList<string> Format(ulong features)
    {
        var list = new List<string>();
        for (int bit = 0; bit < 64; bit++)
        {
            if ((features & (1UL << bit)) != 0)
            {
                list.Add(NameOf(bit));
            }
        }

        return list;
    }

    /// <summary>The names of the bits set in <paramref name="features"/>, comma-separated, ascending by bit.</summary>
    public static string Format(VhostUserProtocolFeatures features) => string.Join(',', Format((ulong)features));

    /// <summary>Parses a comma-separated list of names (or <c>bitN</c>); false with a message naming the bad item.</summary>
    public static bool TryParse(string text, out ulong features, out string? error)
    {
        ArgumentNullException.ThrowIfNull(text);
        features = 0;
        error = null;
        if (string.IsNullOrWhiteSpace(text))
        {
            return true;
        }

        foreach (string raw in text.Split(','))
        {
            string item = raw.Trim();
            int bit = Array.IndexOf(Names, item);
            if ((features & (bit >= 0 ? 1UL << bit : 0)) != 0)
            {
                error = $"protocol feature '{item}' given twice";
                return false;
            }

            if (bit < 0 && item.StartsWith("bit", StringComparison.Ordinal)
                && int.TryParse(item.AsSpan(3), NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n is >= 0 and <= 63
                && item.Length <= 5)
            {
                bit = n;
            }

            if (bit < 0)
            {
                error = $"unknown protocol feature '{item}'";
                return false;
            }

            features |= 1UL << bit;
        }

        return true;
    }
}
