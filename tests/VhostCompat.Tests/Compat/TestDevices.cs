using System.Buffers.Binary;
using VhostCompat.Backend;
using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.Tests.Compat;

/// <summary>A net device with a config space (MAC, status, pairs, MTU) for compat tests.</summary>
internal sealed class TestNetDevice(ulong features, int queues = 2, ushort maxQueueSize = 1024, ushort mtu = 1500) : VhostUserDevice
{
    public override VirtioDeviceType DeviceType => VirtioDeviceType.Net;

    public override ulong DeviceFeatures => features;

    public override int QueueCount => queues;

    public override ulong QueueNumReply => (ulong)(queues / 2);

    public override ushort MaxQueueSize => maxQueueSize;

    public override int ConfigSize => 12;

    public override VhostUserProtocolFeatures ProtocolFeatures => VhostUserProtocolFeatures.Mtu;

    public override void ReadConfig(int offset, Span<byte> destination)
    {
        Span<byte> config = stackalloc byte[12];
        config.Clear();
        BinaryPrimitives.WriteUInt16LittleEndian(config[8..], (ushort)(queues / 2));
        BinaryPrimitives.WriteUInt16LittleEndian(config[10..], mtu);
        config.Slice(offset, destination.Length).CopyTo(destination);
    }

    public static ulong Parse(string names) => VirtioFeatures.Parse(VirtioDeviceType.Net, names);
}

/// <summary>A block device with capacity and blk_size in its config space.</summary>
internal sealed class TestBlockDevice(ulong features, ulong capacity = 2048, uint blockSize = 512) : VhostUserDevice
{
    public override VirtioDeviceType DeviceType => VirtioDeviceType.Block;

    public override ulong DeviceFeatures => features;

    public override int QueueCount => 4;

    public override int ConfigSize => 60;

    public override VhostUserProtocolFeatures ProtocolFeatures => VhostUserProtocolFeatures.Config;

    public override void ReadConfig(int offset, Span<byte> destination)
    {
        Span<byte> config = stackalloc byte[60];
        config.Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(config, capacity);
        BinaryPrimitives.WriteUInt32LittleEndian(config[20..], blockSize);
        BinaryPrimitives.WriteUInt16LittleEndian(config[34..], 4);
        config.Slice(offset, destination.Length).CopyTo(destination);
    }
}
