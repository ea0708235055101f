using System.Globalization;
using System.Text;
using VhostCompat.Virtio;

namespace VhostCompat.Compat;

/// <summary>Parsing of the value-list spelling of a profile.</summary>
public sealed partial class InterfaceProfile
{
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
}
