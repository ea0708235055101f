using System.Collections.Concurrent;
using VhostCompat.Backend;
using VhostCompat.Protocol;
using VhostCompat.Queues;
using VhostCompat.Virtio;

namespace VhostCompat.IntegrationTests.Support;

/// <summary>A configurable device that records every callback, for asserting what the SDK told it.</summary>
internal sealed class TestDevice : VhostUserDevice
{
    private readonly byte[] _config;

    public TestDevice(int queues = 2, ulong features = VirtioFeatureBits.Version1 | VirtioFeatureBits.EventIdx | VirtioFeatureBits.IndirectDesc,
        VhostUserProtocolFeatures protocol = VhostUserProtocolFeatures.Config | VhostUserProtocolFeatures.BackendReq | VhostUserProtocolFeatures.Mtu,
        int configSize = 16)
    {
        QueueCount = queues;
        DeviceFeatures = features;
        ProtocolFeatures = protocol;
        _config = new byte[configSize];
        for (int i = 0; i < configSize; i++)
        {
            _config[i] = (byte)(0xA0 + i);
        }
    }

    public override VirtioDeviceType DeviceType => VirtioDeviceType.Net;

    public override ulong DeviceFeatures { get; }

    public override VhostUserProtocolFeatures ProtocolFeatures { get; }

    public override int QueueCount { get; }

    public override ushort MaxQueueSize => 256;

    public override int ConfigSize => _config.Length;

    /// <summary>Config bytes at or above this offset are read-only (writes refused unless migration).</summary>
    public int ReadOnlyFrom { get; set; } = 8;

    public ConcurrentQueue<VirtqueueInfo> QueueEvents { get; } = new();

    public ConcurrentQueue<DeviceStatus> StatusEvents { get; } = new();

    public ConcurrentQueue<ulong> AckedFeatures { get; } = new();

    public int Disconnects;

    public byte[] Config => _config;

    public override void ReadConfig(int offset, Span<byte> destination) => _config.AsSpan(offset, destination.Length).CopyTo(destination);

    public override bool WriteConfig(int offset, ReadOnlySpan<byte> data, bool migration)
    {
        if (!migration && offset + data.Length > ReadOnlyFrom)
        {
            return false;
        }

        data.CopyTo(_config.AsSpan(offset));
        return true;
    }

    public override void OnFeaturesAcked(ulong features) => AckedFeatures.Enqueue(features);

    public override void OnStatusChanged(DeviceStatus status) => StatusEvents.Enqueue(status);

    public override void OnQueueStateChanged(VirtqueueInfo queue) => QueueEvents.Enqueue(queue);

    /// <summary>Echo service: each chain's readable bytes are written back reversed into its writable part.</summary>
    public override void OnQueueKicked(Virtqueue queue)
    {
        Span<byte> buffer = stackalloc byte[4096];
        LastQueue = queue;
        while (ReleaseHeld && Held.TryDequeue(out DescriptorChain? held))
        {
            int n = held.WriteWritable(0, "released"u8);
            queue.Push(held, n);
        }

        while (queue.TryPop(out DescriptorChain? chain))
        {
            int n = chain.ReadReadable(0, buffer);
            if (chain.IsResubmitted)
            {
                Resubmitted.Enqueue(System.Text.Encoding.ASCII.GetString(buffer[..n]));
            }

            if (Hold?.Invoke(buffer[..n].ToArray()) == true)
            {
                Held.Enqueue(chain); // never completed: what a backend that dies mid-request leaves behind
                continue;
            }

            buffer[..n].Reverse();
            int written = chain.WriteWritable(0, buffer[..n]);
            queue.Push(chain, written);
        }

        if (queue.IsBroken)
        {
            BrokenQueues.Enqueue(queue.BrokenReason!);
        }
    }

    public ConcurrentQueue<string> BrokenQueues { get; } = new();

    /// <summary>Chains whose readable bytes make this return true are popped and kept, never pushed.</summary>
    public Func<byte[], bool>? Hold { get; set; }

    public ConcurrentQueue<DescriptorChain> Held { get; } = new();

    /// <summary>When set, the next pass completes every held chain (writing "released" into it) before popping more.</summary>
    public volatile bool ReleaseHeld;

    /// <summary>The queue the last kick was for.</summary>
    public Virtqueue? LastQueue { get; private set; }

    /// <summary>Readable bytes (ASCII) of every chain the SDK handed out again after a restart.</summary>
    public ConcurrentQueue<string> Resubmitted { get; } = new();

    public override void OnDisconnected() => Interlocked.Increment(ref Disconnects);

    public ConcurrentQueue<string> Announced { get; } = new();

    public override bool OnSendRarp(ReadOnlySpan<byte> mac)
    {
        Announced.Enqueue(Convert.ToHexString(mac));
        return true;
    }
}
