using System.Globalization;
using System.Text;
using VhostCompat.Virtio;

namespace VhostCompat.Compat;

/// <summary>The rules a profile obeys (checked on creation) and its canonical spelling.</summary>
public sealed partial class InterfaceProfile
{
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
