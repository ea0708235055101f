using System.Security.Cryptography;
using VhostCompat.Backend;
using VhostCompat.Queues;
using VhostCompat.Virtio;

namespace VhostCompat.Samples.Rng;

/// <summary>
/// virtio-rng (entropy source): one virtqueue on which the driver posts device-writable buffers; the device
/// fills them with random bytes and returns them. No config space, no device-specific feature bits.
/// </summary>
internal sealed class RngDevice : VhostUserDevice
{
    /// <summary>At most this many bytes per request, so a huge guest buffer cannot stall the worker (the spec allows short writes).</summary>
    private const int MaxBytesPerRequest = 64 * 1024;

    public override VirtioDeviceType DeviceType => VirtioDeviceType.Rng;

    // QEMU's vhost-user-rng passes the transport bits the guest acked straight through to SET_FEATURES,
    // so the ring layouts Linux uses are offered: indirect descriptors and event-index suppression.
    public override ulong DeviceFeatures => VirtioFeatureBits.Version1 | VirtioFeatureBits.IndirectDesc | VirtioFeatureBits.EventIdx;

    public override int QueueCount => 1;

    public override ushort MaxQueueSize => 256;

    /// <summary>
    /// Runs on the queue's worker thread after the guest kicked: answer every posted buffer. (A disabled ring is
    /// served too: the SDK does not re-run this when the ring is enabled later, so skipping would lose the kick.)
    /// </summary>
    public override void OnQueueKicked(Virtqueue queue)
    {
        Span<byte> random = stackalloc byte[256];
        while (queue.TryPop(out DescriptorChain? chain))
        {
            int length = Math.Min(chain.WritableLength, MaxBytesPerRequest);
            for (int offset = 0; offset < length; offset += random.Length)
            {
                Span<byte> piece = random[..Math.Min(random.Length, length - offset)];
                RandomNumberGenerator.Fill(piece);
                chain.WriteWritable(offset, piece);
            }

            queue.Push(chain, length);
        }

        random.Clear(); // leave no copy of what the guest received on the stack
    }
}
