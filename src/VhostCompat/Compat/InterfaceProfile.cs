using System.Globalization;
using System.Text;
using VhostCompat.Virtio;

namespace VhostCompat.Compat;

/// <summary>A profile text or value that breaks the profile rules. <see cref="Key"/> names the offending key when there is one.</summary>
public sealed class ProfileFormatException : FormatException
{
    /// <summary>Creates the exception.</summary>
    public ProfileFormatException()
    {
    }

    /// <summary>Creates the exception with a message.</summary>
    public ProfileFormatException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and an inner exception.</summary>
    public ProfileFormatException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Creates the exception naming the key that is wrong.</summary>
    public ProfileFormatException(string? key, string message)
        : base(key is null ? message : $"{key}: {message}")
    {
        Key = key;
    }

    /// <summary>The key that is wrong (<c>mrg_rxbuf</c>, <c>max_ring</c>, <c>type</c>, ...), or null when the problem is not tied to one key.</summary>
    public string? Key { get; }
}

/// <summary>
/// An interface profile: a named, immutable set of everything a guest can see of a vhost-user
/// device — the virtio feature bits the backend offers, the ring-size and queue limits, and the
/// guest-visible config values it pins. Two spellings: a vendor id (<c>org.example.vnet.v2</c>,
/// resolved through a <see cref="ProfileCatalog"/>) and the canonical value list
/// (<see cref="Canonical"/>, e.g. <c>type=net,any_layout=on,...,max_ring=256,...</c>), which is
/// self-describing. Instances are validated on creation (virtio dependency rules in
/// <see cref="FeatureCheckScope.Backend"/> scope, limits, config values) and thread-safe.
/// See docs/profiles.md.
/// </summary>
public sealed class InterfaceProfile : IEquatable<InterfaceProfile>
{
    /// <summary>Ring size used when a value list does not give <c>max_ring</c> (QEMU's default queue size).</summary>
    public const ushort DefaultMaxRingSize = 256;

    /// <summary>The value-list key of <see cref="DeviceState"/>.</summary>
    private const string DeviceStateKey = "device_state";

    private const int MaxIdLength = 128;

    /// <summary>
    /// Creates and validates a profile.
    /// </summary>
    /// <param name="deviceType">Device type; net, block and rng have device-specific keys, other types only transport keys.</param>
    /// <param name="features">Virtio feature bits the backend offers under this profile (GET_FEATURES, without the vhost-only bits 26 and 30, which the SDK manages).</param>
    /// <param name="maxRingSize">Largest ring size accepted (SET_VRING_NUM), a power of two 1..32768 (key <c>max_ring</c>).</param>
    /// <param name="queues">
    /// Number of <b>virtqueues</b> (not net queue pairs) the backend serves, 1..255 (key <c>queues</c>).
    /// Net: even, 2 without <c>mq</c>; block: 1 without <c>mq</c>; rng: 1. GET_QUEUE_NUM answers <see cref="QueueNumReply"/>.
    /// </param>
    /// <param name="id">Vendor id (<c>org.example.vnet.v2</c>) or null for an anonymous value-list profile.</param>
    /// <param name="mtu">Net only: the MTU the config space reports (68..65535); requires the <c>mtu</c> feature. Null = not pinned.</param>
    /// <param name="blockSize">Block only: the logical block size in bytes (power of two 512..65536); requires <c>blk_size</c>. Null = not pinned.</param>
    /// <param name="capacity">Block only: capacity in 512-byte sectors. Null = not pinned.</param>
    /// <param name="deviceState">
    /// The DEVICE_STATE protocol feature (key <c>device_state</c>): false never offers it, true requires a device with
    /// state, null (default) leaves it to the device. It decides whether a frontend that transfers backend state
    /// (QEMU 10.0 for vhost-user-net) puts that state into the migration stream, which QEMU 7.2 cannot load.
    /// </param>
    /// <exception cref="ProfileFormatException">A rule is broken; <see cref="ProfileFormatException.Key"/> names the key.</exception>
    public InterfaceProfile(VirtioDeviceType deviceType, ulong features, ushort maxRingSize, int queues, string? id = null, ushort? mtu = null, uint? blockSize = null, ulong? capacity = null, bool? deviceState = null)
    {
        DeviceState = deviceState;
        DeviceType = deviceType;
        Features = features;
        MaxRingSize = maxRingSize;
        Queues = queues;
        Id = id;
        Mtu = mtu;
        BlockSize = blockSize;
        Capacity = capacity;
        Validate();
        Canonical = BuildCanonical();
    }

    /// <summary>The vendor id, or null for a profile given only as a value list.</summary>
    public string? Id { get; }

    /// <summary>The device type.</summary>
    public VirtioDeviceType DeviceType { get; }

    /// <summary>Virtio feature bits offered under this profile (never includes the vhost-only bits).</summary>
    public ulong Features { get; }

    /// <summary>Largest ring size (descriptors) the backend accepts under this profile.</summary>
    public ushort MaxRingSize { get; }

    /// <summary>Number of virtqueues (net: 2 per queue pair).</summary>
    public int Queues { get; }

    /// <summary>Net: MTU reported in config space, or null when not pinned.</summary>
    public ushort? Mtu { get; }

    /// <summary>Block: logical block size in bytes, or null when not pinned.</summary>
    public uint? BlockSize { get; }

    /// <summary>Block: capacity in 512-byte sectors, or null when not pinned.</summary>
    public ulong? Capacity { get; }

    /// <summary>The DEVICE_STATE protocol feature: offered (true), never offered (false), or the device's choice (null).</summary>
    public bool? DeviceState { get; }

    /// <summary>The answer to GET_QUEUE_NUM under this profile: queue pairs for net, virtqueues otherwise.</summary>
    public ulong QueueNumReply => DeviceType == VirtioDeviceType.Net ? (ulong)(Queues / 2) : (ulong)Queues;

    /// <summary>
    /// The canonical value list: <c>type=</c> first, then every other key of the device type in
    /// ordinal order, each exactly once (<c>capacity</c> and <c>device_state</c> only when pinned). Two profiles with the
    /// same values have the same canonical string under the same SDK version.
    /// </summary>
    public string Canonical { get; }

    /// <summary>
    /// Parses a value list (<c>key=value,...</c>). Unspecified feature keys are <c>off</c>,
    /// <c>max_ring</c> defaults to <see cref="DefaultMaxRingSize"/>, <c>queues</c> to the minimum of
    /// the type (net 2, otherwise 1), config values are not pinned. <c>type=</c> is required unless
    /// <paramref name="deviceType"/> is given (then it must agree).
    /// </summary>
    /// <exception cref="ProfileFormatException">Unknown key, duplicate key, bad value or a broken rule; the key is named.</exception>
    public static InterfaceProfile Parse(string values, VirtioDeviceType? deviceType = null)
    {
        ArgumentNullException.ThrowIfNull(values);
        var items = new List<(string Key, string Value)>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (string raw in values.Split(','))
        {
            string item = raw.Trim();
            if (item.Length == 0)
            {
                throw new ProfileFormatException(null, $"empty item in profile '{values}'");
            }

            int eq = item.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0)
            {
                throw new ProfileFormatException(eq == 0 ? null : item, $"'{item}' is not key=value");
            }

            string key = item[..eq].Trim();
            string value = item[(eq + 1)..].Trim();
            items.Add((key, value));
        }

        VirtioDeviceType? type = deviceType;
        foreach (var (key, value) in items)
        {
            if (key == "type")
            {
                var t = ParseType(value) ?? throw new ProfileFormatException("type", $"unknown device type '{value}' (net, block, rng or a numeric virtio device id)");
                if (deviceType is { } expected && expected != t)
                {
                    throw new ProfileFormatException("type", $"profile is for {VirtioFeatures.TypeLabel(t)} but the device is {VirtioFeatures.TypeLabel(expected)}");
                }

                type = t;
            }
        }

        if (type is not { } dt)
        {
            throw new ProfileFormatException("type", "missing (a value list must say type=net|block|rng unless the device type is known)");
        }

        ulong features = 0;
        ushort maxRing = DefaultMaxRingSize;
        int queues = VirtioDeviceTypes.Find(dt)?.MinQueues ?? 1;
        ushort? mtu = null;
        uint? blockSize = null;
        ulong? capacity = null;
        bool? deviceState = null;
        foreach (var (rawKey, value) in items)
        {
            string key = rawKey;
            var feature = VirtioFeatures.Find(dt, key);
            if (feature is not null)
            {
                key = feature.Name;
            }

            if (!seen.Add(key))
            {
                throw new ProfileFormatException(key, "given twice");
            }

            switch (key)
            {
                case "type":
                    break;
                case "max_ring":
                    maxRing = (ushort)ParseNumber(key, value, 1, 32768);
                    break;
                case "queues":
                    queues = (int)ParseNumber(key, value, 1, 255);
                    break;
                case "capacity" when dt == VirtioDeviceType.Block:
                    capacity = ParseNumber(key, value, 0, long.MaxValue);
                    break;
                case DeviceStateKey:
                    deviceState = value switch
                    {
                        "on" => true,
                        "off" => false,
                        _ => throw new ProfileFormatException(key, $"value '{value}' is not on or off"),
                    };
                    break;
                default:
                    if (feature is null)
                    {
                        throw new ProfileFormatException(rawKey, $"unknown key for a {VirtioFeatures.TypeLabel(dt)} profile");
                    }

                    if (feature.IsVhostOnly)
                    {
                        throw new ProfileFormatException(key, "is a vhost-only bit managed by the SDK, not part of a profile");
                    }

                    if (value == "on")
                    {
                        features |= feature.Mask;
                    }
                    else if (value == "off")
                    {
                    }
                    else if (dt == VirtioDeviceType.Net && key == "mtu")
                    {
                        mtu = (ushort)ParseNumber(key, value, 68, 65535, "on, off or a number");
                        features |= feature.Mask;
                    }
                    else if (dt == VirtioDeviceType.Block && key == "blk_size")
                    {
                        blockSize = (uint)ParseNumber(key, value, 512, 65536, "on, off or a number");
                        features |= feature.Mask;
                    }
                    else
                    {
                        throw new ProfileFormatException(key, $"value '{value}' is not on or off");
                    }

                    break;
            }
        }

        return new InterfaceProfile(dt, features, maxRing, queues, null, mtu, blockSize, capacity, deviceState);
    }

    /// <summary>Like <see cref="Parse"/>, returning false and the error instead of throwing.</summary>
    public static bool TryParse(string values, VirtioDeviceType? deviceType, out InterfaceProfile? profile, out ProfileFormatException? error)
    {
        try
        {
            profile = Parse(values, deviceType);
            error = null;
            return true;
        }
        catch (ProfileFormatException ex)
        {
            profile = null;
            error = ex;
            return false;
        }
    }

    /// <summary>True when <paramref name="text"/> is spelled like a value list (contains <c>=</c>) rather than an id.</summary>
    public static bool IsValueList(string text) => text?.Contains('=', StringComparison.Ordinal) == true;

    /// <summary>
    /// True for a valid vendor id: lower-case letters, digits, <c>-</c> and <c>_</c> in at least two
    /// dot-separated labels, each starting with a letter or digit, at most 128 characters
    /// (<c>org.example.vnet.v2</c>).
    /// </summary>
    public static bool IsValidId(string? id)
    {
        if (string.IsNullOrEmpty(id) || id.Length > MaxIdLength)
        {
            return false;
        }

        string[] labels = id.Split('.');
        if (labels.Length < 2)
        {
            return false;
        }

        foreach (string l in labels)
        {
            if (l.Length == 0 || !IsAlnum(l[0]))
            {
                return false;
            }

            foreach (char c in l)
            {
                if (!IsAlnum(c) && c != '-' && c != '_')
                {
                    return false;
                }
            }
        }

        return true;

        static bool IsAlnum(char c) => c is (>= 'a' and <= 'z') or (>= '0' and <= '9');
    }

    /// <summary>
    /// The full capability of a described device as a profile: its known, non-vhost-only feature bits, ring limit
    /// and queue count. Config values are not pinned.
    /// </summary>
    /// <exception cref="ProfileFormatException">The device's own features break a rule.</exception>
    internal static InterfaceProfile FromDescription(DeviceDescription device, string? id = null)
    {
        ArgumentNullException.ThrowIfNull(device);
        ulong features = device.DeviceFeatures & VirtioFeatures.KnownMask(device.DeviceType) & ~VirtioFeatures.VhostOnlyMask;
        return new InterfaceProfile(device.DeviceType, features, device.MaxQueueSize, device.QueueCount, id);
    }

    /// <summary>The same profile under another id.</summary>
    /// <exception cref="ProfileFormatException">The id is not valid (<see cref="IsValidId"/>).</exception>
    public InterfaceProfile WithId(string? id) => new(DeviceType, Features, MaxRingSize, Queues, id, Mtu, BlockSize, Capacity, DeviceState);

    /// <summary>The keys and values of <see cref="Canonical"/>, in canonical order.</summary>
    public IReadOnlyList<KeyValuePair<string, string>> Values() => BuildValues();

    /// <summary>
    /// Everything this profile asks for that a device with the given capability cannot provide:
    /// feature bits (named), ring size, queue count. Empty when the profile is a subset.
    /// </summary>
    public IReadOnlyList<string> CheckSupportedBy(ulong deviceFeatures, int queueCount, ushort maxQueueSize)
    {
        var problems = new List<string>();
        ulong missing = Features & ~deviceFeatures;
        if (missing != 0)
        {
            problems.Add($"features not offered by the device: {VirtioFeatures.Format(DeviceType, missing)}");
        }

        if (MaxRingSize > maxQueueSize)
        {
            problems.Add($"max_ring {MaxRingSize} exceeds the device maximum {maxQueueSize}");
        }

        if (Queues > queueCount)
        {
            problems.Add($"queues {Queues} exceeds the device's {queueCount} virtqueues");
        }

        return problems;
    }

    /// <summary>
    /// Key-by-key differences from <paramref name="other"/> (ids are not compared): each entry is
    /// the key, this profile's value and the other's (<c>unset</c> when absent).
    /// </summary>
    public IReadOnlyList<(string Key, string This, string Other)> Diff(InterfaceProfile other)
    {
        ArgumentNullException.ThrowIfNull(other);
        var mine = Values().ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        var theirs = other.Values().ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        var keys = mine.Keys.Union(theirs.Keys).OrderBy(k => k == "type" ? string.Empty : k, StringComparer.Ordinal);
        var diff = new List<(string, string, string)>();
        foreach (string k in keys)
        {
            string a = mine.TryGetValue(k, out string? va) ? va : "unset";
            string b = theirs.TryGetValue(k, out string? vb) ? vb : "unset";
            if (a != b)
            {
                diff.Add((k, a, b));
            }
        }

        return diff;
    }

    /// <summary>True when both profiles present the same interface, whatever their ids.</summary>
    public bool SameInterface(InterfaceProfile? other) =>
        other is not null && DeviceType == other.DeviceType && Features == other.Features && MaxRingSize == other.MaxRingSize
        && Queues == other.Queues && Mtu == other.Mtu && BlockSize == other.BlockSize && Capacity == other.Capacity
        && DeviceState == other.DeviceState;

    /// <inheritdoc/>
    public bool Equals(InterfaceProfile? other) => SameInterface(other) && string.Equals(Id, other!.Id, StringComparison.Ordinal);

    /// <inheritdoc/>
    public override bool Equals(object? obj) => Equals(obj as InterfaceProfile);

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(Id, Canonical);

    /// <summary>The id when there is one, otherwise the canonical value list.</summary>
    public override string ToString() => Id ?? Canonical;

    internal static VirtioDeviceType? ParseType(string value) => value switch
    {
        _ when VirtioDeviceTypes.TryParse(value, out VirtioDeviceType known) && value is not "blk" and not "snd" => known,
        _ when value.Length is > 0 and <= 3 && value.AsSpan().IndexOfAnyExceptInRange('0', '9') < 0
            && uint.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out uint n) && n is > 0 and < 256 => (VirtioDeviceType)n,
        _ => null,
    };

    private static ulong ParseNumber(string key, string value, ulong min, ulong max, string expected = "a number")
    {
        if (value.Length is 0 or > 20 || value.AsSpan().IndexOfAnyExceptInRange('0', '9') >= 0
            || (value.Length > 1 && value[0] == '0')
            || !ulong.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out ulong n))
        {
            throw new ProfileFormatException(key, $"value '{value}' is not {expected}");
        }

        if (n < min || n > max)
        {
            throw new ProfileFormatException(key, $"value {n} outside {min}..{max}");
        }

        return n;
    }

    private void Validate()
    {
        if (Id is not null && !IsValidId(Id))
        {
            throw new ProfileFormatException("id", $"'{Id}' is not a valid profile id (lower-case dot-separated labels such as org.example.vnet.v2)");
        }

        // The same range ParseType accepts: a profile must survive its own canonical form.
        if ((uint)DeviceType is 0 or > 255)
        {
            throw new ProfileFormatException("type", $"device type {(uint)DeviceType} is not a virtio device id (1..255)");
        }

        string label = VirtioFeatures.TypeLabel(DeviceType);
        ulong vhostOnly = Features & VirtioFeatures.VhostOnlyMask;
        if (vhostOnly != 0)
        {
            throw new ProfileFormatException(VirtioFeatures.Format(DeviceType, vhostOnly), "is a vhost-only bit managed by the SDK, not part of a profile");
        }

        ulong unknown = Features & ~VirtioFeatures.KnownMask(DeviceType);
        if (unknown != 0)
        {
            throw new ProfileFormatException(VirtioFeatures.Format(DeviceType, unknown), $"not a known {label} feature");
        }

        var violations = VirtioFeatures.CheckDependencies(DeviceType, Features, FeatureCheckScope.Backend);
        if (violations.Count > 0)
        {
            throw new ProfileFormatException(violations[0].Feature, string.Join("; ", violations.Select(v => v.Message)));
        }

        if (MaxRingSize == 0 || MaxRingSize > 32768 || (MaxRingSize & (MaxRingSize - 1)) != 0)
        {
            throw new ProfileFormatException("max_ring", $"{MaxRingSize} is not a power of two in 1..32768");
        }

        if (Queues is < 1 or > 255)
        {
            throw new ProfileFormatException("queues", $"{Queues} outside 1..255");
        }

        bool mq;
        switch (DeviceType)
        {
            case VirtioDeviceType.Net:
                mq = (Features & VirtioFeatureBits.NetMq) != 0;
                if (Queues % 2 != 0)
                {
                    throw new ProfileFormatException("queues", $"{Queues} is odd; a net profile counts virtqueues (2 per queue pair)");
                }

                if (!mq && Queues != 2)
                {
                    throw new ProfileFormatException("queues", $"{Queues} virtqueues need mq=on (without mq a net device has exactly 2)");
                }

                break;
            case VirtioDeviceType.Block:
                mq = (Features & (1UL << 12)) != 0;
                if (!mq && Queues != 1)
                {
                    throw new ProfileFormatException("queues", $"{Queues} virtqueues need mq=on (without mq a block device has exactly 1)");
                }

                break;
            case VirtioDeviceType.Rng:
                if (Queues != 1)
                {
                    throw new ProfileFormatException("queues", $"an rng device has exactly 1 virtqueue, not {Queues}");
                }

                break;
            case var other when VirtioDeviceTypes.Find(other) is { } info && (Queues < info.MinQueues || Queues > info.MaxQueues):
                throw new ProfileFormatException("queues", info.MinQueues == info.MaxQueues
                    ? $"the {info.Name} device type has exactly {info.MinQueues} virtqueues, not {Queues}"
                    : $"the {info.Name} device type has {info.MinQueues}..{info.MaxQueues} virtqueues, not {Queues}");
        }

        if (Mtu is { } m)
        {
            if (DeviceType != VirtioDeviceType.Net)
            {
                throw new ProfileFormatException("mtu", $"only a net profile has an MTU");
            }

            if ((Features & VirtioFeatureBits.NetMtu) == 0)
            {
                throw new ProfileFormatException("mtu", "a value needs the mtu feature");
            }

            if (m < 68)
            {
                throw new ProfileFormatException("mtu", $"{m} outside 68..65535");
            }
        }

        if (BlockSize is { } bs)
        {
            if (DeviceType != VirtioDeviceType.Block)
            {
                throw new ProfileFormatException("blk_size", "only a block profile has a block size");
            }

            if ((Features & (1UL << 6)) == 0)
            {
                throw new ProfileFormatException("blk_size", "a value needs the blk_size feature");
            }

            if (bs is < 512 or > 65536 || (bs & (bs - 1)) != 0)
            {
                throw new ProfileFormatException("blk_size", $"{bs} is not a power of two in 512..65536");
            }
        }

        if (Capacity is { } c)
        {
            if (DeviceType != VirtioDeviceType.Block)
            {
                throw new ProfileFormatException("capacity", "only a block profile has a capacity");
            }

            if (c > long.MaxValue)
            {
                throw new ProfileFormatException("capacity", $"{c} is too large");
            }
        }
    }

    private List<KeyValuePair<string, string>> BuildValues()
    {
        var list = new List<KeyValuePair<string, string>>();
        foreach (var f in VirtioFeatures.Known(DeviceType))
        {
            if (f.IsVhostOnly)
            {
                continue;
            }

            string v = (Features & f.Mask) != 0 ? "on" : "off";
            if (f.Name == "mtu" && Mtu is { } m && DeviceType == VirtioDeviceType.Net)
            {
                v = m.ToString(CultureInfo.InvariantCulture);
            }
            else if (f.Name == "blk_size" && BlockSize is { } b && DeviceType == VirtioDeviceType.Block)
            {
                v = b.ToString(CultureInfo.InvariantCulture);
            }

            list.Add(new(f.Name, v));
        }

        list.Add(new("max_ring", MaxRingSize.ToString(CultureInfo.InvariantCulture)));
        list.Add(new("queues", Queues.ToString(CultureInfo.InvariantCulture)));
        if (Capacity is { } c)
        {
            list.Add(new("capacity", c.ToString(CultureInfo.InvariantCulture)));
        }

        if (DeviceState is { } ds)
        {
            list.Add(new(DeviceStateKey, ds ? "on" : "off"));
        }

        list.Sort((a, b) => string.CompareOrdinal(a.Key, b.Key));
        list.Insert(0, new("type", VirtioFeatures.TypeLabel(DeviceType)));
        return list;
    }

    private string BuildCanonical()
    {
        var sb = new StringBuilder();
        foreach (var kv in BuildValues())
        {
            if (sb.Length > 0)
            {
                sb.Append(',');
            }

            sb.Append(kv.Key).Append('=').Append(kv.Value);
        }

        return sb.ToString();
    }
}
