using VhostCompat.Interop;
using VhostCompat.Memory;
using VhostCompat.Queues;

namespace VhostCompat.Backend;

/// <summary>
/// What the frontend set up for one virtqueue over the control socket (SET_VRING_*: size, addresses, base, eventfds,
/// enable) and whether it runs. One name per concept: this is the setup, <see cref="Virtqueue"/> the running queue,
/// <see cref="VirtqueueInfo"/> the snapshot a device is given.
/// </summary>
internal sealed class VirtqueueSetup
{
    public VirtqueueSetup(int index) => Index = index;

    public int Index { get; }

    public int Size { get; set; }

    public bool AddressesSet { get; set; }

    public uint AddressFlags { get; set; }

    public ulong Descriptor { get; set; }

    public ulong Available { get; set; }

    public ulong Used { get; set; }

    public ulong LogGuestAddress { get; set; }

    public uint Base { get; set; }

    public FileDescriptor? Kick { get; set; }

    public bool KickSet { get; set; }

    public bool KickPolled { get; set; }

    public FileDescriptor? Call { get; set; }

    public bool CallDisabled { get; set; }

    public FileDescriptor? Err { get; set; }

    public bool Enabled { get; set; }

    public bool Started { get; set; }

    /// <summary>The running queue while started.</summary>
    public Virtqueue? Queue { get; set; }

    public VirtqueueWorker? Worker { get; set; }

    public QueueBinding? Binding { get; set; }

    /// <summary>The inflight buffer reference the running queue writes into, if any.</summary>
    public InflightArea? Inflight { get; set; }

    /// <summary>The memory table reference the running queue uses.</summary>
    public GuestMemoryTable? Lease { get; set; }

    public VirtqueueInfo Info => new(Index, Size, Started, Enabled, Base);

    public void ReplaceKick(FileDescriptor? fd)
    {
        Kick?.Dispose();
        Kick = fd;
    }

    public void ReplaceCall(FileDescriptor? fd)
    {
        Call?.Dispose();
        Call = fd;
    }

    public void ReplaceErr(FileDescriptor? fd)
    {
        Err?.Dispose();
        Err = fd;
    }

    /// <summary>Returns the ring to its initial state and closes its fds.</summary>
    public void Reset()
    {
        ReplaceKick(null);
        ReplaceCall(null);
        ReplaceErr(null);
        Size = 0;
        AddressesSet = false;
        AddressFlags = 0;
        Descriptor = Available = Used = LogGuestAddress = 0;
        Base = 0;
        KickSet = KickPolled = CallDisabled = false;
        Enabled = Started = false;
    }
}
