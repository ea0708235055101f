using VhostCompat.Compat;
using VhostCompat.Protocol;
using VhostCompat.Queues;
using VhostCompat.Virtio;

namespace VhostCompat.Backend;

/// <summary>
/// What a backend author implements: the device type, what the implementation can do, and
/// callbacks for the life of its queues. Everything else (protocol, memory, negotiation,
/// validation, reconnect, logging) is the SDK's job. One device instance serves one frontend
/// connection at a time; callbacks are invoked from the connection's message loop, one at a time.
/// </summary>
public abstract class VhostUserDevice
{
    /// <summary>The virtio device type (net = 1, block = 2, rng = 4, ...).</summary>
    public abstract VirtioDeviceType DeviceType { get; }

    /// <summary>
    /// Virtio feature bits this implementation supports: device-specific bits plus the transport
    /// bits it handles (e.g. <see cref="VirtioFeatureBits.Version1"/>). The SDK adds the vhost-only
    /// bits itself (<see cref="VirtioFeatureBits.ProtocolFeatures"/>).
    /// </summary>
    public abstract ulong DeviceFeatures { get; }

    /// <summary>
    /// Device-specific protocol features the device opts into, on top of the ones the SDK always
    /// implements (MQ, REPLY_ACK, STATUS, LOG_SHMFD, CONFIGURE_MEM_SLOTS, RESET_DEVICE, and
    /// DEVICE_STATE when <see cref="StateVersion"/> is non-zero). Examples: <see cref="VhostUserProtocolFeatures.Config"/>
    /// for devices with a config space the frontend reads from the backend (block),
    /// <see cref="VhostUserProtocolFeatures.Mtu"/> for net.
    /// </summary>
    public virtual VhostUserProtocolFeatures ProtocolFeatures => VhostUserProtocolFeatures.None;

    /// <summary>
    /// The interface profiles this build publishes (versioned ids such as <c>org.example.vnet.v2</c>)
    /// and which is the latest. Without a pin the backend offers the latest; null = no catalog (the
    /// device's whole capability is offered unless a value-list profile is pinned).
    /// </summary>
    public virtual ProfileCatalog? Catalog => null;

    /// <summary>Number of virtqueues the device can serve (net: 2 per queue pair). At most 255.</summary>
    public abstract int QueueCount { get; }

    /// <summary>
    /// The answer to GET_QUEUE_NUM. Its unit is device-specific: queue pairs for net (QEMU compares
    /// it with <c>queues=</c>), virtqueues for block. Defaults to <see cref="QueueCount"/>.
    /// </summary>
    public virtual ulong QueueNumReply => (ulong)QueueCount;

    /// <summary>Largest ring size the device accepts (a power of two, at most 32768).</summary>
    public virtual ushort MaxQueueSize => 1024;

    /// <summary>Size in bytes of the device config space served by GET_CONFIG (0 = none).</summary>
    public virtual int ConfigSize => 0;

    /// <summary>
    /// Fills <paramref name="destination"/> with config space bytes starting at <paramref name="offset"/> (range already
    /// validated). QEMU reads the whole config on every byte the driver reads, possibly before SET_FEATURES: keep it cheap
    /// and free of side effects.
    /// </summary>
    public virtual void ReadConfig(int offset, Span<byte> destination) => destination.Clear();

    /// <summary>
    /// Applies a SET_CONFIG write (range already validated). QEMU writes the <em>whole</em> config space back on
    /// every byte the driver writes, read-only fields included with the values it last read: store the bytes of the
    /// writable fields, ignore the others and return true (<see cref="Virtio.ConfigSpace"/> and
    /// <see cref="Virtio.VirtioInputConfig"/> do this). Return false only for a write the device cannot apply at all: the
    /// request is refused, and without NEED_REPLY the connection is closed. <paramref name="migration"/> is true for
    /// writes QEMU makes while loading migrated state.
    /// </summary>
    public virtual bool WriteConfig(int offset, ReadOnlySpan<byte> data, bool migration) => false;

    /// <summary>Called when the frontend acked a feature set (SET_FEATURES), before any queue starts.</summary>
    public virtual void OnFeaturesAcked(ulong features)
    {
    }

    /// <summary>Called when the driver status changes (SET_STATUS).</summary>
    public virtual void OnStatusChanged(DeviceStatus status)
    {
    }

    /// <summary>Called when a queue starts (it has memory, addresses, size and a kick) and stops (GET_VRING_BASE, reset, disconnect).</summary>
    public virtual void OnQueueStateChanged(VirtqueueInfo queue)
    {
    }

    /// <summary>
    /// The data path: called on the queue's worker thread when the driver kicked the queue (or, for
    /// polled queues, repeatedly). Pop chains with <see cref="Virtqueue.TryPop"/>, process them and
    /// <see cref="Virtqueue.Push"/> them; the SDK notifies the guest afterwards. Must not block.
    /// Exceptions are logged and do not stop other queues.
    /// </summary>
    public virtual void OnQueueKicked(Virtqueue queue)
    {
    }

    /// <summary>Called on the queue's worker thread when a queue starts, before its first kick; keep the reference to use the queue from other handlers on the same worker.</summary>
    public virtual void OnQueueStarted(Virtqueue queue)
    {
    }

    /// <summary>
    /// Called on the queue's worker thread when the frontend enables or disables a started queue
    /// (SET_VRING_ENABLE), before the next <see cref="OnQueueKicked"/>: first with true right after
    /// <see cref="OnQueueStarted"/> if the queue starts enabled, then on every change. QEMU starts rings disabled and
    /// enables them about a millisecond later, so an event-driven device (input, console, a sensor) starts its event
    /// source here and stops it on false. Not called when the queue stops (<see cref="OnQueueStopped"/> is).
    /// </summary>
    public virtual void OnQueueEnabledChanged(Virtqueue queue, bool enabled)
    {
    }

    /// <summary>Called on the queue's worker thread when a queue stops; the reference must not be used afterwards.</summary>
    public virtual void OnQueueStopped(Virtqueue queue)
    {
    }

    /// <summary>
    /// SEND_RARP (net, when the device opts into <see cref="VhostUserProtocolFeatures.Rarp"/>): after a
    /// migration QEMU asks the backend to announce the guest's MAC for guests that cannot announce
    /// themselves (no GUEST_ANNOUNCE). Called on a worker thread. Return false if nothing was sent.
    /// </summary>
    public virtual bool OnSendRarp(ReadOnlySpan<byte> mac) => false;

    /// <summary>
    /// Version of the device's own state format (written into every saved blob). Return 0 (the
    /// default) when the device has no internal state: DEVICE_STATE is then not offered.
    /// </summary>
    public virtual uint StateVersion => 0;

    /// <summary>
    /// The state formats <see cref="LoadState"/> accepts, published in the capability document so a preflight can
    /// refuse a migration whose state this build would refuse. Default: <see cref="StateVersion"/> alone (none when 0).
    /// </summary>
    public virtual IReadOnlyList<uint> LoadableStateVersions => StateVersion == 0 ? [] : [StateVersion];

    /// <summary>Serialises internal state (MAC table, counters...) for migration; called with every queue stopped.</summary>
    public virtual byte[] SaveState() => [];

    /// <summary>
    /// Restores state saved by <see cref="SaveState"/> of a build whose <see cref="StateVersion"/> was
    /// <paramref name="version"/>. Return false to refuse it (e.g. a newer format); the transfer then fails cleanly.
    /// </summary>
    public virtual bool LoadState(uint version, ReadOnlySpan<byte> state) => false;

    /// <summary>
    /// The backend-request channel of the current connection, for requests the device sends to the frontend
    /// (<see cref="BackendChannel.NotifyConfigChanged"/>). Opt in with <see cref="VhostUserProtocolFeatures.BackendReq"/>
    /// in <see cref="ProtocolFeatures"/>; closed while no frontend is connected or it did not set the channel up.
    /// </summary>
    public BackendChannel BackendRequests { get; } = new();

    /// <summary>Called when the frontend connection ends, after every queue has stopped. The next connection starts from scratch.</summary>
    public virtual void OnDisconnected()
    {
    }
}

/// <summary>A snapshot of one virtqueue's negotiated state, as reported to the device.</summary>
/// <param name="Index">Queue index (net: RX = 2·pair, TX = 2·pair + 1).</param>
/// <param name="Size">Ring size (number of descriptors).</param>
/// <param name="Started">True while the backend may process the ring.</param>
/// <param name="Enabled">True when the frontend enabled the ring (SET_VRING_ENABLE or legacy mode).</param>
/// <param name="NextAvailableIndex">Where processing resumes (SET_VRING_BASE / the reply to GET_VRING_BASE).</param>
public readonly record struct VirtqueueInfo(int Index, int Size, bool Started, bool Enabled, uint NextAvailableIndex);
