using System.Diagnostics.CodeAnalysis;

namespace VhostCompat.Queues;

/// <summary>
/// Device-writable buffers an event-driven device (input, console, a sensor, net RX without traffic) has popped
/// and keeps until it has data for them. The driver fills the ring ahead of time; the device takes every chain as
/// it arrives (<see cref="TakeAvailable"/> in <c>OnQueueKicked</c>), so the ring is empty and the worker does not
/// run the handler again, and completes the oldest held chain when an event happens (<see cref="TryComplete(ReadOnlySpan{byte})"/>
/// from a <see cref="Virtqueue.WatchReadable"/> callback, from <c>OnQueueKicked</c> after
/// <see cref="Virtqueue.Wake"/>, or from any other code on the queue's worker). Chains are completed in the
/// order the driver made them available. Not thread-safe: use it on the queue's worker only, like the queue.
/// </summary>
/// <param name="queue">The queue the chains are popped from; keep one instance per started queue.</param>
public sealed class HeldChains(Virtqueue queue)
{
    private readonly Queue<DescriptorChain> _held = new();

    /// <summary>The queue the chains belong to.</summary>
    public Virtqueue Queue { get; } = queue ?? throw new ArgumentNullException(nameof(queue));

    /// <summary>Chains popped and not completed yet.</summary>
    public int Count => _held.Count;

    /// <summary>
    /// Pops every chain the driver has made available and holds it. Chains without a device-writable part are
    /// completed at once with length 0 (an event queue has no use for them). Returns the number of chains now held.
    /// </summary>
    public int TakeAvailable()
    {
        while (Queue.TryPop(out DescriptorChain? chain))
        {
            if (chain.WritableLength == 0)
            {
                Queue.Push(chain, 0);
            }
            else
            {
                _held.Enqueue(chain);
            }
        }

        return _held.Count;
    }

    /// <summary>Removes the oldest held chain, to be filled and pushed by the caller; false when none is held.</summary>
    public bool TryTake([NotNullWhen(true)] out DescriptorChain? chain) => _held.TryDequeue(out chain);

    /// <summary>
    /// Writes <paramref name="data"/> into the oldest held chain (at most its writable length; <paramref name="written"/>
    /// says how much) and pushes it. False, and nothing written, when no chain is held: the caller keeps the event
    /// (or drops it, as a device whose driver is not keeping up may). The caller, or the SDK after a callback on the
    /// worker, notifies the guest.
    /// </summary>
    public bool TryComplete(ReadOnlySpan<byte> data, out int written)
    {
        written = 0;
        if (!_held.TryDequeue(out DescriptorChain? chain))
        {
            return false;
        }

        written = chain.WriteWritable(0, data[..Math.Min(data.Length, chain.WritableLength)]);
        Queue.Push(chain, written);
        return true;
    }

    /// <inheritdoc cref="TryComplete(ReadOnlySpan{byte}, out int)"/>
    public bool TryComplete(ReadOnlySpan<byte> data) => TryComplete(data, out _);

    /// <summary>
    /// Forgets every held chain without pushing it. Call it from <c>OnQueueStopped</c>: the ring's state then goes
    /// back to the frontend (GET_VRING_BASE), and buffers the driver made available are its to reclaim or re-post.
    /// </summary>
    public void Clear() => _held.Clear();
}
