using System.Globalization;
using System.Text;

namespace VhostCompat.Virtio;

/// <summary>One named virtio feature bit of a device type (or of the transport, shared by all types).</summary>
/// <param name="Bit">Bit number, 0..63.</param>
/// <param name="Name">
/// Canonical lower-case name: the QEMU device property name where one exists (<c>mrg_rxbuf</c>,
/// <c>indirect_desc</c>, <c>iommu_platform</c>, <c>queue_reset</c>), otherwise the specification
/// name without its prefix, lower-cased (<c>guest_uso4</c>).
/// </param>
/// <param name="SpecName">The name in the virtio specification / Linux headers (e.g. <c>VIRTIO_NET_F_MRG_RXBUF</c>).</param>
/// <param name="DeviceType">The device type the bit belongs to; null for transport and vhost-only bits.</param>
public sealed record VirtioFeatureInfo(int Bit, string Name, string SpecName, VirtioDeviceType? DeviceType)
{
    /// <summary>The bit as a mask.</summary>
    public ulong Mask => 1UL << Bit;

    /// <summary>
    /// True for the vhost-only bits (26 VHOST_F_LOG_ALL, 30 VHOST_USER_F_PROTOCOL_FEATURES): they
    /// are part of the vhost-user negotiation, never seen by the guest, and never part of a profile.
    /// </summary>
    public bool IsVhostOnly => DeviceType is null && Bit is 26 or 30;
}

/// <summary>Which set of bits a dependency check looks at.</summary>
public enum FeatureCheckScope
{
    /// <summary>The features a guest driver sees and acks: every virtio rule applies.</summary>
    Guest,

    /// <summary>
    /// The features a vhost-user <em>backend</em> offers (GET_FEATURES, profiles). The frontend
    /// (QEMU, DPDK virtio-user) emulates some net features itself — the control queue and the bits
    /// that live on it (<c>ctrl_vq</c>, <c>ctrl_rx</c>, <c>ctrl_vlan</c>, <c>ctrl_rx_extra</c>,
    /// <c>ctrl_mac_addr</c>, <c>ctrl_guest_offloads</c>), <c>mac</c> and <c>status</c> — and never
    /// sends them in SET_FEATURES, so a requirement on one of those is treated as satisfied: a
    /// backend may offer <c>mq</c> without <c>ctrl_vq</c>. One offload rule is not applied either:
    /// <c>host_ecn</c> without <c>host_tso4</c>/<c>host_tso6</c>, which real backends offer (DPDK's
    /// vhost PMD without <c>tso=1</c>, 22.11 and 24.11) and QEMU passes on to the guest; the bit has
    /// no effect without TSO.
    /// </summary>
    Backend,
}

/// <summary>A violated virtio dependency rule: <see cref="Feature"/> is set but none of <see cref="RequiresAnyOf"/> is.</summary>
/// <param name="Feature">Canonical name of the feature that is set.</param>
/// <param name="RequiresAnyOf">Canonical names of the features of which at least one must also be set.</param>
public sealed record FeatureDependencyViolation(string Feature, IReadOnlyList<string> RequiresAnyOf)
{
    /// <summary>A sentence naming both sides, e.g. <c>guest_ecn requires guest_tso4 or guest_tso6</c>.</summary>
    public string Message => $"{Feature} requires {string.Join(" or ", RequiresAnyOf)}";

    /// <inheritdoc/>
    public override string ToString() => Message;
}

/// <summary>
/// The virtio feature model: names ↔ bits per device type (transport bits 24–41 and the vhost-only
/// bits 26 and 30 are known for every type; device bits for every type of <see cref="VirtioDeviceTypes.All"/>), comma-list parsing
/// and canonical formatting, and the dependency rules of the virtio specification ("Feature bit
/// requirements"). All members are thread-safe.
/// </summary>
public static partial class VirtioFeatures
{
    private static readonly VirtioFeatureInfo[] Transport =
    [
        new(24, "notify_on_empty", "VIRTIO_F_NOTIFY_ON_EMPTY", null),
        new(26, "log_all", "VHOST_F_LOG_ALL", null),
        new(27, "any_layout", "VIRTIO_F_ANY_LAYOUT", null),
        new(28, "indirect_desc", "VIRTIO_RING_F_INDIRECT_DESC", null),
        new(29, "event_idx", "VIRTIO_RING_F_EVENT_IDX", null),
        new(30, "protocol_features", "VHOST_USER_F_PROTOCOL_FEATURES", null),
        new(32, "version_1", "VIRTIO_F_VERSION_1", null),
        new(33, "iommu_platform", "VIRTIO_F_ACCESS_PLATFORM", null),
        new(34, "packed", "VIRTIO_F_RING_PACKED", null),
        new(35, "in_order", "VIRTIO_F_IN_ORDER", null),
        new(36, "order_platform", "VIRTIO_F_ORDER_PLATFORM", null),
        new(37, "sr_iov", "VIRTIO_F_SR_IOV", null),
        new(38, "notification_data", "VIRTIO_F_NOTIFICATION_DATA", null),
        new(39, "notif_config_data", "VIRTIO_F_NOTIF_CONFIG_DATA", null),
        new(40, "queue_reset", "VIRTIO_F_RING_RESET", null),
        new(41, "admin_vq", "VIRTIO_F_ADMIN_VQ", null),
    ];

    private static readonly VirtioFeatureInfo[] Net = NetFeatures();
    private static readonly VirtioFeatureInfo[] Block = BlockFeatures();

    // Accepted on input, never produced: the specification's names for bits where QEMU's property name differs.
    private static readonly Dictionary<string, string> Aliases = new(StringComparer.Ordinal)
    {
        ["access_platform"] = "iommu_platform",
        ["ring_packed"] = "packed",
        ["ring_reset"] = "queue_reset",
        ["standby"] = "failover",
    };

    private static readonly Dictionary<VirtioDeviceType, Table> Tables = new()
    {
        [VirtioDeviceType.Net] = new Table(Merge(Net), NetRules(), NetFrontendEmulated()),
        [VirtioDeviceType.Block] = new Table(Merge(Block), [], 0),
        [VirtioDeviceType.Rng] = new Table(Merge([]), [], 0),
        [VirtioDeviceType.Input] = new Table(Merge([]), [], 0),
        [VirtioDeviceType.Console] = new Table(Merge(ConsoleFeatures()), [], 0),
        [VirtioDeviceType.Scsi] = new Table(Merge(ScsiFeatures()), [], 0),
        [VirtioDeviceType.Gpu] = new Table(Merge(GpuFeatures()), [], 0),
        [VirtioDeviceType.Vsock] = new Table(Merge(VsockFeatures()), [], 0),
        [VirtioDeviceType.Crypto] = new Table(Merge(CryptoFeatures()), [], 0),
        [VirtioDeviceType.Sound] = new Table(Merge(SoundFeatures()), [], 0),
        [VirtioDeviceType.Fs] = new Table(Merge(FsFeatures()), [], 0),
        [VirtioDeviceType.Scmi] = new Table(Merge(ScmiFeatures()), [], 0),
        [VirtioDeviceType.I2c] = new Table(Merge(I2cFeatures()), [], 0),
        [VirtioDeviceType.Gpio] = new Table(Merge(GpioFeatures()), [], 0),
    };

    private static readonly Table TransportOnly = new(Merge([]), [], 0);

    /// <summary>Mask of the vhost-only bits (26 LOG_ALL, 30 PROTOCOL_FEATURES).</summary>
    public const ulong VhostOnlyMask = VirtioFeatureBits.LogAll | VirtioFeatureBits.ProtocolFeatures;

    /// <summary>Every feature known for <paramref name="type"/> (transport, vhost-only and device bits), ascending by bit.</summary>
    public static IReadOnlyList<VirtioFeatureInfo> Known(VirtioDeviceType type) => TableOf(type).Features;

    /// <summary>Mask of every bit known for <paramref name="type"/>.</summary>
    public static ulong KnownMask(VirtioDeviceType type) => TableOf(type).KnownMask;

    /// <summary>The feature with bit number <paramref name="bit"/> for <paramref name="type"/>, or null if the bit has no name.</summary>
    public static VirtioFeatureInfo? Find(VirtioDeviceType type, int bit) =>
        TableOf(type).ByBit.TryGetValue(bit, out var f) ? f : null;

    /// <summary>
    /// The feature named <paramref name="name"/> (canonical name or a specification alias such as
    /// <c>access_platform</c>; case-sensitive, lower-case) for <paramref name="type"/>, or null.
    /// </summary>
    public static VirtioFeatureInfo? Find(VirtioDeviceType type, string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        var table = TableOf(type);
        if (Aliases.TryGetValue(name, out string? canonical))
        {
            name = canonical;
        }

        return table.ByName.TryGetValue(name, out var f) ? f : null;
    }

    /// <summary>The canonical name of a bit, or <c>bitN</c> when the bit has no name for <paramref name="type"/>.</summary>
    public static string NameOf(VirtioDeviceType type, int bit)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bit);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(bit, 63);
        return Find(type, bit)?.Name ?? "bit" + bit.ToString(CultureInfo.InvariantCulture);
    }

    /// <summary>The names of the bits set in <paramref name="features"/>, ascending by bit (unnamed bits as <c>bitN</c>).</summary>
    public static IReadOnlyList<string> Names(VirtioDeviceType type, ulong features)
    {
        var names = new List<string>();
        for (int bit = 0; bit < 64; bit++)
        {
            if ((features & (1UL << bit)) != 0)
            {
                names.Add(NameOf(type, bit));
            }
        }

        return names;
    }

    /// <summary>Canonical text of a feature set: names separated by commas, ascending by bit; empty for 0. <see cref="Parse"/> reads it back.</summary>
    public static string Format(VirtioDeviceType type, ulong features) => string.Join(',', Names(type, features));

    /// <summary>
    /// Parses a comma-separated list of feature names (canonical names, aliases, or <c>bitN</c> with
    /// N in 0..63; surrounding whitespace ignored; empty text = no features).
    /// </summary>
    /// <exception cref="FormatException">An unknown name, an empty item or a name given twice; the message names the item.</exception>
    public static ulong Parse(VirtioDeviceType type, string text) =>
        TryParse(type, text, out ulong features, out string? error) ? features : throw new FormatException(error);

    /// <summary>Like <see cref="Parse"/> but returns false with a message naming the bad item instead of throwing.</summary>
    public static bool TryParse(VirtioDeviceType type, string text, out ulong features, out string? error)
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
            if (item.Length == 0)
            {
                error = $"empty item in feature list '{text}'";
                return false;
            }

            if (!TryParseOne(type, item, out int bit))
            {
                error = $"unknown {TypeLabel(type)} feature '{item}'";
                return false;
            }

            ulong mask = 1UL << bit;
            if ((features & mask) != 0)
            {
                error = $"feature '{item}' ({NameOf(type, bit)}) given twice";
                return false;
            }

            features |= mask;
        }

        return true;
    }

    /// <summary>
    /// Every violated dependency rule of <paramref name="features"/>, in ascending order of the
    /// dependent bit. Empty when the set is consistent. Unknown bits are ignored.
    /// </summary>
    public static IReadOnlyList<FeatureDependencyViolation> CheckDependencies(VirtioDeviceType type, ulong features, FeatureCheckScope scope = FeatureCheckScope.Guest)
    {
        var table = TableOf(type);
        ulong satisfied = features | (scope == FeatureCheckScope.Backend ? table.FrontendEmulated : 0);
        var violations = new List<FeatureDependencyViolation>();
        foreach (var rule in table.Rules)
        {
            if ((features & (1UL << rule.Feature)) == 0 || (rule.GuestOnly && scope == FeatureCheckScope.Backend))
            {
                continue;
            }

            ulong any = 0;
            foreach (int r in rule.AnyOf)
            {
                any |= 1UL << r;
            }

            if ((satisfied & any) == 0)
            {
                violations.Add(new FeatureDependencyViolation(NameOf(type, rule.Feature), rule.AnyOf.Select(b => NameOf(type, b)).ToArray()));
            }
        }

        return violations;
    }

    /// <summary>The short type label used in messages and documents (<c>net</c>, <c>block</c>, <c>input</c>, ..., or the numeric id).</summary>
    internal static string TypeLabel(VirtioDeviceType type) => VirtioDeviceTypes.NameOf(type);

    /// <summary>Bits that a vhost-user frontend emulates for <paramref name="type"/> (see <see cref="FeatureCheckScope.Backend"/>).</summary>
    internal static ulong FrontendEmulatedMask(VirtioDeviceType type) => TableOf(type).FrontendEmulated;

    private static bool TryParseOne(VirtioDeviceType type, string item, out int bit)
    {
        bit = -1;
        if (Find(type, item) is { } f)
        {
            bit = f.Bit;
            return true;
        }

        if (item.StartsWith("bit", StringComparison.Ordinal) && item.Length is > 3 and <= 5
            && item.AsSpan(3).IndexOfAnyExceptInRange('0', '9') < 0
            && !(item.Length == 5 && item[3] == '0')
            && int.TryParse(item.AsSpan(3), NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n <= 63)
        {
            bit = n;
            return true;
        }

        return false;
    }

    private static Table TableOf(VirtioDeviceType type) => Tables.TryGetValue(type, out var t) ? t : TransportOnly;

    private static VirtioFeatureInfo[] Merge(VirtioFeatureInfo[] device) => [.. device.Concat(Transport).OrderBy(f => f.Bit)];

    private static VirtioFeatureInfo[] NetFeatures()
    {
        var t = VirtioDeviceType.Net;
        return
        [
            new(0, "csum", "VIRTIO_NET_F_CSUM", t),
            new(1, "guest_csum", "VIRTIO_NET_F_GUEST_CSUM", t),
            new(2, "ctrl_guest_offloads", "VIRTIO_NET_F_CTRL_GUEST_OFFLOADS", t),
            new(3, "mtu", "VIRTIO_NET_F_MTU", t),
            new(5, "mac", "VIRTIO_NET_F_MAC", t),
            new(6, "gso", "VIRTIO_NET_F_GSO", t),
            new(7, "guest_tso4", "VIRTIO_NET_F_GUEST_TSO4", t),
            new(8, "guest_tso6", "VIRTIO_NET_F_GUEST_TSO6", t),
            new(9, "guest_ecn", "VIRTIO_NET_F_GUEST_ECN", t),
            new(10, "guest_ufo", "VIRTIO_NET_F_GUEST_UFO", t),
            new(11, "host_tso4", "VIRTIO_NET_F_HOST_TSO4", t),
            new(12, "host_tso6", "VIRTIO_NET_F_HOST_TSO6", t),
            new(13, "host_ecn", "VIRTIO_NET_F_HOST_ECN", t),
            new(14, "host_ufo", "VIRTIO_NET_F_HOST_UFO", t),
            new(15, "mrg_rxbuf", "VIRTIO_NET_F_MRG_RXBUF", t),
            new(16, "status", "VIRTIO_NET_F_STATUS", t),
            new(17, "ctrl_vq", "VIRTIO_NET_F_CTRL_VQ", t),
            new(18, "ctrl_rx", "VIRTIO_NET_F_CTRL_RX", t),
            new(19, "ctrl_vlan", "VIRTIO_NET_F_CTRL_VLAN", t),
            new(20, "ctrl_rx_extra", "VIRTIO_NET_F_CTRL_RX_EXTRA", t),
            new(21, "guest_announce", "VIRTIO_NET_F_GUEST_ANNOUNCE", t),
            new(22, "mq", "VIRTIO_NET_F_MQ", t),
            new(23, "ctrl_mac_addr", "VIRTIO_NET_F_CTRL_MAC_ADDR", t),
            new(50, "device_stats", "VIRTIO_NET_F_DEVICE_STATS", t),
            new(52, "vq_notf_coal", "VIRTIO_NET_F_VQ_NOTF_COAL", t),
            new(53, "notf_coal", "VIRTIO_NET_F_NOTF_COAL", t),
            new(54, "guest_uso4", "VIRTIO_NET_F_GUEST_USO4", t),
            new(55, "guest_uso6", "VIRTIO_NET_F_GUEST_USO6", t),
            new(56, "host_uso", "VIRTIO_NET_F_HOST_USO", t),
            new(57, "hash_report", "VIRTIO_NET_F_HASH_REPORT", t),
            new(59, "guest_hdrlen", "VIRTIO_NET_F_GUEST_HDRLEN", t),
            new(60, "rss", "VIRTIO_NET_F_RSS", t),
            new(61, "rsc_ext", "VIRTIO_NET_F_RSC_EXT", t),
            new(62, "failover", "VIRTIO_NET_F_STANDBY", t),
            new(63, "speed_duplex", "VIRTIO_NET_F_SPEED_DUPLEX", t),
        ];
    }

    private static VirtioFeatureInfo[] BlockFeatures()
    {
        var t = VirtioDeviceType.Block;
        return
        [
            new(0, "barrier", "VIRTIO_BLK_F_BARRIER", t),
            new(1, "size_max", "VIRTIO_BLK_F_SIZE_MAX", t),
            new(2, "seg_max", "VIRTIO_BLK_F_SEG_MAX", t),
            new(4, "geometry", "VIRTIO_BLK_F_GEOMETRY", t),
            new(5, "ro", "VIRTIO_BLK_F_RO", t),
            new(6, "blk_size", "VIRTIO_BLK_F_BLK_SIZE", t),
            new(7, "scsi", "VIRTIO_BLK_F_SCSI", t),
            new(9, "flush", "VIRTIO_BLK_F_FLUSH", t),
            new(10, "topology", "VIRTIO_BLK_F_TOPOLOGY", t),
            new(11, "config_wce", "VIRTIO_BLK_F_CONFIG_WCE", t),
            new(12, "mq", "VIRTIO_BLK_F_MQ", t),
            new(13, "discard", "VIRTIO_BLK_F_DISCARD", t),
            new(14, "write_zeroes", "VIRTIO_BLK_F_WRITE_ZEROES", t),
            new(15, "lifetime", "VIRTIO_BLK_F_LIFETIME", t),
            new(16, "secure_erase", "VIRTIO_BLK_F_SECURE_ERASE", t),
            new(17, "zoned", "VIRTIO_BLK_F_ZONED", t),
        ];
    }

    // virtio 1.3 §5.1.3.1 "Feature bit requirements" (network device).
    private static Rule[] NetRules() =>
    [
        new(2, [17]),        // ctrl_guest_offloads -> ctrl_vq
        new(7, [1]),         // guest_tso4 -> guest_csum
        new(8, [1]),         // guest_tso6 -> guest_csum
        new(9, [7, 8]),      // guest_ecn -> guest_tso4 | guest_tso6
        new(10, [1]),        // guest_ufo -> guest_csum
        new(11, [0]),        // host_tso4 -> csum
        new(12, [0]),        // host_tso6 -> csum
        // host_ecn -> host_tso4 | host_tso6, guest scope only: DPDK's vhost PMD offers host_ecn with tso=0 (its default).
        new(13, [11, 12], GuestOnly: true),
        new(14, [0]),        // host_ufo -> csum
        new(18, [17]),       // ctrl_rx -> ctrl_vq
        new(19, [17]),       // ctrl_vlan -> ctrl_vq
        new(20, [18]),       // ctrl_rx_extra -> ctrl_rx (the spec's rule; ctrl_rx itself needs ctrl_vq)
        new(21, [17]),       // guest_announce -> ctrl_vq
        new(22, [17]),       // mq -> ctrl_vq
        new(23, [17]),       // ctrl_mac_addr -> ctrl_vq
        new(50, [17]),       // device_stats -> ctrl_vq
        new(52, [17]),       // vq_notf_coal -> ctrl_vq
        new(53, [17]),       // notf_coal -> ctrl_vq
        new(54, [1]),        // guest_uso4 -> guest_csum
        new(55, [1]),        // guest_uso6 -> guest_csum
        new(56, [0]),        // host_uso -> csum
        new(57, [17]),       // hash_report -> ctrl_vq
        new(59, [0]),        // guest_hdrlen -> csum
        new(60, [17]),       // rss -> ctrl_vq
        new(61, [11, 12]),   // rsc_ext -> host_tso4 | host_tso6
    ];

    private static ulong NetFrontendEmulated() =>
        (1UL << 2) | (1UL << 5) | (1UL << 16) | (1UL << 17) | (1UL << 18) | (1UL << 19) | (1UL << 20) | (1UL << 23);

    /// <summary>A dependency rule; <paramref name="GuestOnly"/>: not applied in <see cref="FeatureCheckScope.Backend"/> scope.</summary>
    private sealed record Rule(int Feature, int[] AnyOf, bool GuestOnly = false);

    private sealed class Table
    {
        public Table(VirtioFeatureInfo[] features, Rule[] rules, ulong frontendEmulated)
        {
            Features = features;
            Rules = rules;
            FrontendEmulated = frontendEmulated;
            ByBit = features.ToDictionary(f => f.Bit);
            ByName = features.ToDictionary(f => f.Name, StringComparer.Ordinal);
            KnownMask = features.Aggregate(0UL, (m, f) => m | f.Mask);
        }

        public VirtioFeatureInfo[] Features { get; }

        public Rule[] Rules { get; }

        public ulong FrontendEmulated { get; }

        public Dictionary<int, VirtioFeatureInfo> ByBit { get; }

        public Dictionary<string, VirtioFeatureInfo> ByName { get; }

        public ulong KnownMask { get; }
    }
}

/// <summary>Formatting helpers for feature masks.</summary>
internal static class FeatureText
{
    private static readonly System.Buffers.SearchValues<char> HexDigits = System.Buffers.SearchValues.Create("0123456789abcdefABCDEF");

    public static string Hex(ulong value) => "0x" + value.ToString("x", CultureInfo.InvariantCulture);

    public static bool TryParseHex(string? text, out ulong value)
    {
        value = 0;
        return text is not null && text.Length is > 2 and <= 18 && text.StartsWith("0x", StringComparison.Ordinal)
            && text.AsSpan(2).IndexOfAnyExcept(HexDigits) < 0
            && ulong.TryParse(text.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out value);
    }

    public static string Join(IEnumerable<string> items)
    {
        var sb = new StringBuilder();
        foreach (string s in items)
        {
            if (sb.Length > 0)
            {
                sb.Append(", ");
            }

            sb.Append(s);
        }

        return sb.ToString();
    }
}
