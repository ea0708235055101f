using System.Globalization;
using VhostCompat.Protocol;

namespace VhostCompat.Compat;

/// <summary>Lower-case names of the vhost-user protocol feature bits (the specification's names without prefix).</summary>
internal static class ProtocolFeatureNames
{
    private static readonly string[] Names =
    [
        "mq", "log_shmfd", "rarp", "reply_ack", "mtu", "backend_req", "cross_endian", "crypto_session",
        "pagefault", "config", "backend_send_fd", "host_notifier", "inflight_shmfd", "reset_device",
        "inband_notifications", "configure_mem_slots", "status", "xen_mmap", "shared_object", "device_state",
    ];

    public static string NameOf(int bit) => bit < Names.Length ? Names[bit] : "bit" + bit.ToString(CultureInfo.InvariantCulture);

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

    public static string Format(VhostUserProtocolFeatures features) => string.Join(',', Format((ulong)features));

    public static bool TryParse(string text, out ulong features, out string? error)
    {
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
