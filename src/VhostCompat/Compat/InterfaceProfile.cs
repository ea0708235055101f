using System.Globalization;
using System.Text;
using VhostCompat.Virtio;

namespace VhostCompat.Compat;

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
public sealed partial class InterfaceProfile : IEquatable<InterfaceProfile>
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
}
