namespace VhostCompat.Protocol;

/// <summary>
/// The value rules of front-end requests that hold whatever the backend's state: ring indices, sizes and bases,
/// address flags, the enable value, the status byte, the MTU and the config flags. One copy, used by the SDK's
/// backend session and by the proxy's shield; <see cref="PayloadRules"/> says how big each payload is, these say what
/// its values may be. Each returns null when the value is valid, else the reason.
/// </summary>
internal static class RequestRules
{
    /// <summary>A ring index against the queue count.</summary>
    public static string? RingIndex(uint index, int queues) =>
        index >= (uint)queues ? $"ring index {index} outside 0..{queues - 1}" : null;

    /// <summary>SET_VRING_NUM. <paramref name="aboveLimit"/>: the size is only too big (what a frontend searching for the limit sends).</summary>
    public static string? RingSize(uint size, int maxSize, bool packed, out bool aboveLimit)
    {
        aboveLimit = size > (uint)maxSize;
        return size == 0 || aboveLimit ? $"ring size {size} outside 1..{maxSize}"
            : !packed && (size & (size - 1)) != 0 ? $"split ring size {size} is not a power of two"
            : null;
    }

    /// <summary>SET_VRING_BASE of a split ring: a 16-bit index.</summary>
    public static string? SplitRingBase(uint value, bool packed) =>
        !packed && value > 0xFFFF ? $"split ring base {value} does not fit 16 bits" : null;

    /// <summary>SET_VRING_ADDR flags: only LOG is defined.</summary>
    public static string? AddressFlags(uint flags) =>
        (flags & ~VringAddressPayload.FlagLog) != 0 ? $"unknown vring address flags 0x{flags:x}" : null;

    /// <summary>SET_VRING_ENABLE: 0 or 1.</summary>
    public static string? EnableValue(uint value) => value > 1 ? $"enable value {value} is neither 0 nor 1" : null;

    /// <summary>SET_STATUS: the virtio status is one byte.</summary>
    public static string? Status(ulong value) => value > 0xFF ? $"status 0x{value:x} does not fit a byte" : null;

    /// <summary>NET_SET_MTU: the virtio-net limits.</summary>
    public static string? Mtu(ulong mtu) => mtu is < 68 or > 65535 ? $"MTU {mtu} outside 68..65535" : null;

    /// <summary>GET/SET_CONFIG flags: 0 or MIGRATION.</summary>
    public static string? ConfigFlags(uint flags) => flags > DeviceConfigHeader.FlagMigration ? $"unknown config flags 0x{flags:x}" : null;
}
