using Microsoft.Extensions.Logging;
using VhostCompat.Backend;
using VhostCompat.Virtio;

namespace VhostCompat.Samples.Net;

/// <summary>
/// A virtio-net device in its first form: it negotiates and accepts guest memory and rings.
/// Its packet path (a learning switch) comes with the data-path work.
/// </summary>
internal sealed partial class NetDevice : VhostUserDevice
{
    private readonly ILogger _logger;
    private readonly int _queuePairs;

    public NetDevice(int queuePairs, ILogger logger)
    {
        _queuePairs = queuePairs;
        _logger = logger;
    }

    public override VirtioDeviceType DeviceType => VirtioDeviceType.Net;

    public override ulong DeviceFeatures =>
        VirtioFeatureBits.Version1 | VirtioFeatureBits.NetMrgRxbuf | VirtioFeatureBits.IndirectDesc
        | VirtioFeatureBits.EventIdx | (_queuePairs > 1 ? VirtioFeatureBits.NetMq : 0);

    public override int QueueCount => 2 * _queuePairs;

    // QEMU's vhost-user-net compares GET_QUEUE_NUM with netdev queues= (queue pairs).
    public override ulong QueueNumReply => (ulong)_queuePairs;

    public override void OnQueueStateChanged(VirtqueueInfo queue) =>
        LogQueue(_logger, queue.Index % 2 == 0 ? "rx" : "tx", queue.Index / 2, queue.Started, queue.Enabled, queue.Size);

    public override void OnStatusChanged(DeviceStatus status) => LogStatus(_logger, status);

    [LoggerMessage(100, LogLevel.Information, "net {Direction} queue of pair {Pair}: started={Started} enabled={Enabled} size={Size}")]
    private static partial void LogQueue(ILogger logger, string direction, int pair, bool started, bool enabled, int size);

    [LoggerMessage(101, LogLevel.Information, "net driver status {Status}")]
    private static partial void LogStatus(ILogger logger, DeviceStatus status);
}
