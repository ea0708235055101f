using Microsoft.Extensions.Logging;
using VhostCompat.Backend;
using VhostCompat.Compat;
using VhostCompat.Queues;
using VhostCompat.Virtio;

namespace VhostCompat.Samples.Net;

/// <summary>
/// One port of the switch: a virtio-net device whose TX frames go into the <see cref="L2Switch"/>
/// and whose RX queue receives frames from the other ports. In sink mode TX frames are counted
/// and dropped (for benchmarks).
/// </summary>
internal sealed partial class NetDevice : VhostUserDevice
{
    private const int NetHeaderLength = 12;
    private readonly ILogger _logger;
    private readonly int _queuePairs;
    private readonly int _port;
    private readonly L2Switch _switch;
    private readonly bool _sink;
    private readonly byte[] _frame = new byte[NetHeaderLength + 65536];
    private readonly ProfileCatalog _catalog;
    private readonly ulong _features;

    public NetDevice(int port, L2Switch @switch, int queuePairs, bool sink, ILogger logger, int build = NetCatalog.LatestBuild)
    {
        _port = port;
        _catalog = NetCatalog.For(build, queuePairs);
        _features = NetCatalog.Features(_catalog);
        _switch = @switch;
        _queuePairs = queuePairs;
        _sink = sink;
        _logger = logger;
    }

    public override VirtioDeviceType DeviceType => VirtioDeviceType.Net;

    // No checksum/TSO offloads: the guest computes checksums and sends MTU-sized frames, which this
    // switch can carry end to end between any two ports. What a build can do is its catalog's union.
    public override ulong DeviceFeatures => _features;

    public override ProfileCatalog Catalog => _catalog;

    public override int QueueCount => 2 * _queuePairs;

    // QEMU's vhost-user-net compares GET_QUEUE_NUM with netdev queues= (queue pairs).
    public override ulong QueueNumReply => (ulong)_queuePairs;

    // Announce migrated guests that cannot announce themselves (SEND_RARP).
    public override VhostCompat.Protocol.VhostUserProtocolFeatures ProtocolFeatures => VhostCompat.Protocol.VhostUserProtocolFeatures.Rarp;

    public override bool OnSendRarp(ReadOnlySpan<byte> mac)
    {
        Span<byte> frame = stackalloc byte[60];
        frame.Clear();
        frame[..6].Fill(0xFF);                       // broadcast
        mac.CopyTo(frame[6..]);                      // from the guest's MAC
        frame[12] = 0x80;                            // ethertype 0x8035: RARP
        frame[13] = 0x35;
        frame[15] = 1;                               // hardware type: Ethernet
        frame[16] = 0x08;                            // protocol type: IPv4
        frame[18] = 6;                               // hardware address length
        frame[19] = 4;                               // protocol address length
        frame[21] = 3;                               // operation: reverse request
        mac.CopyTo(frame[22..]);                     // sender hardware address
        mac.CopyTo(frame[32..]);                     // target hardware address
        _switch.Forward(_port, frame);               // learns the MAC on this port and floods the rest
        return true;
    }

    public override void OnQueueStarted(Virtqueue queue)
    {
        if (queue.Index == 0)
        {
            _switch.SetRx(_port, queue);
        }
    }

    public override void OnQueueStopped(Virtqueue queue)
    {
        if (queue.Index == 0)
        {
            _switch.SetRx(_port, null);
        }
    }

    public override void OnQueueKicked(Virtqueue queue)
    {
        if (queue.Index % 2 == 0)
        {
            return; // RX: new buffers; frames are dropped rather than queued when none are posted.
        }

        L2Switch.PortStats stats = _switch.Stats[_port];
        while (queue.TryPop(out DescriptorChain? chain))
        {
            int length = chain.ReadableLength;
            if (!_sink && queue.IsEnabled && length > NetHeaderLength && length <= _frame.Length)
            {
                chain.ReadReadable(0, _frame.AsSpan(0, length));
                queue.Push(chain, 0);
                stats.TxPackets++;
                stats.TxBytes += length - NetHeaderLength;
                _switch.Forward(_port, _frame.AsSpan(NetHeaderLength, length - NetHeaderLength));
            }
            else
            {
                queue.Push(chain, 0);
                stats.TxPackets++;
                stats.TxBytes += Math.Max(0, length - NetHeaderLength);
            }
        }
    }

    public override void OnQueueStateChanged(VirtqueueInfo queue) =>
        LogQueue(_logger, _port, queue.Index % 2 == 0 ? "rx" : "tx", queue.Index / 2, queue.Started, queue.Enabled, queue.Size);

    public override void OnStatusChanged(DeviceStatus status) => LogStatus(_logger, _port, status);

    [LoggerMessage(100, LogLevel.Information, "port {Port}: net {Direction} queue of pair {Pair}: started={Started} enabled={Enabled} size={Size}")]
    private static partial void LogQueue(ILogger logger, int port, string direction, int pair, bool started, bool enabled, int size);

    [LoggerMessage(101, LogLevel.Information, "port {Port}: net driver status {Status}")]
    private static partial void LogStatus(ILogger logger, int port, DeviceStatus status);
}
