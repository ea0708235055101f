using VhostCompat.Interop;
using VhostCompat.Protocol;

namespace VhostCompat.Memory;

/// <summary>
/// The shared buffer of INFLIGHT_SHMFD: one region per virtqueue in which the backend records which
/// chains it has taken from the ring and not yet returned, so that a restarted backend can resubmit
/// them. The backend creates it (GET_INFLIGHT_FD), the frontend keeps it across backend restarts
/// and hands it back (SET_INFLIGHT_FD). Layout (vhost-user spec, "Inflight I/O tracking"): queue
/// regions of <see cref="QueueRegionSize"/> bytes each, back to back; their content is validated
/// when a queue starts (see <c>SplitInflight</c>, <c>PackedInflight</c>). Reference-counted: a
/// running queue keeps the mapping alive while the frontend replaces it.
/// </summary>
internal sealed class InflightArea
{
    /// <summary>Queue regions are aligned to this many bytes (QEMU, DPDK and libvhost-user agree).</summary>
    public const int Alignment = 64;

    /// <summary>Split: u64 features, u16 version, u16 desc_num, u16 last_batch_head, u16 used_idx.</summary>
    public const int SplitHeaderSize = 16;

    /// <summary>Split entry: u8 inflight, 5 padding, u16 next, u64 counter.</summary>
    public const int SplitEntrySize = 16;

    /// <summary>Packed: u64 features, u16 version, desc_num, free_head, old_free_head, used_idx, old_used_idx, u8 used_wrap, old_used_wrap, 7 padding (+ alignment to 8).</summary>
    public const int PackedHeaderSize = 32;

    /// <summary>Packed entry: u8 inflight, u8 pad, u16 next, last, num, u64 counter, u16 id, flags, u32 len, u64 addr.</summary>
    public const int PackedEntrySize = 32;

    /// <summary>Upper bound on the whole buffer (256 queues × 32768 packed entries is ~256 MiB; anything above is hostile).</summary>
    public const ulong MaxSize = 1UL << 30;

    private readonly MemoryMapping _mapping;
    private RefCount _references = new();

    private InflightArea(MemoryMapping mapping, ulong offset, ulong size, ushort queues, ushort queueSize, bool packed)
    {
        _mapping = mapping;
        Base = mapping.Address + (nint)offset;
        Size = size;
        QueueCount = queues;
        QueueSize = queueSize;
        Packed = packed;
        Stride = QueueRegionSize(queueSize, packed);
    }

    /// <summary>Address of the first queue region in this process.</summary>
    public nint Base { get; }

    /// <summary>Bytes shared.</summary>
    public ulong Size { get; }

    /// <summary>Number of queue regions.</summary>
    public ushort QueueCount { get; }

    /// <summary>Entries per queue region (the largest ring size the buffer can track).</summary>
    public ushort QueueSize { get; }

    /// <summary>Whether the regions use the packed-ring layout.</summary>
    public bool Packed { get; }

    /// <summary>Bytes per queue region.</summary>
    public ulong Stride { get; }

    /// <summary>Bytes of one queue region for <paramref name="queueSize"/> entries, aligned to <see cref="Alignment"/>.</summary>
    public static ulong QueueRegionSize(ushort queueSize, bool packed)
    {
        ulong raw = packed
            ? PackedHeaderSize + ((ulong)PackedEntrySize * queueSize)
            : SplitHeaderSize + ((ulong)SplitEntrySize * queueSize);
        return (raw + Alignment - 1) & ~(ulong)(Alignment - 1);
    }

    /// <summary>Address of queue <paramref name="index"/>'s region, or 0 if the buffer has no region for it.</summary>
    public nint QueueRegion(int index) => index >= 0 && index < QueueCount ? Base + (nint)((ulong)index * Stride) : 0;

    /// <summary>GET_INFLIGHT_FD: creates a zeroed buffer for <paramref name="queues"/> × <paramref name="queueSize"/> and returns it with the fd to send.</summary>
    public static InflightArea? Create(ushort queues, ushort queueSize, bool packed, int maxQueues, int maxQueueSize, out FileDescriptor? fd, out string error)
    {
        fd = null;
        if (!CheckShape(queues, queueSize, maxQueues, maxQueueSize, out error))
        {
            return null;
        }

        ulong size = (ulong)queues * QueueRegionSize(queueSize, packed);
        FileDescriptor created = FileDescriptor.CreateMemfd("vhostcompat-inflight", (long)size);
        // Sealed at birth: the frontend hands this fd back after a restart, and nobody may shrink it under a mapping.
        Libc.TryAddSeals(created.Value, Libc.F_SEAL_SHRINK, out _);
        MemoryMapping? mapping = MemoryMapping.TryMap(created.Value, size, out int errno);
        if (mapping is null)
        {
            created.Dispose();
            error = Libc.ErrorText("mmap", errno);
            return null;
        }

        fd = created;
        return new InflightArea(mapping, 0, size, queues, queueSize, packed);
    }

    /// <summary>SET_INFLIGHT_FD: maps the frontend's buffer after checking its shape against the layout and the fd's size.</summary>
    public static InflightArea? TryMap(InflightDescriptionPayload d, FileDescriptor fd, bool packed, int maxQueues, int maxQueueSize, out string error) =>
        TryMap(d, fd, packed, maxQueues, maxQueueSize, requireSealed: false, out error);

    /// <inheritdoc cref="TryMap(InflightDescriptionPayload, FileDescriptor, bool, int, int, out string)"/>
    public static InflightArea? TryMap(InflightDescriptionPayload d, FileDescriptor fd, bool packed, int maxQueues, int maxQueueSize, bool requireSealed, out string error)
    {
        if (!CheckShape(d.NumQueues, d.QueueSize, maxQueues, maxQueueSize, out error))
        {
            return null;
        }

        ulong expected = (ulong)d.NumQueues * QueueRegionSize(d.QueueSize, packed);
        if (d.MmapSize != expected)
        {
            error = $"inflight buffer of {d.MmapSize} bytes does not match {d.NumQueues} {(packed ? "packed" : "split")} queues of {d.QueueSize} entries ({expected} bytes)";
            return null;
        }

        if (d.MmapOffset > MaxSize || d.MmapOffset % (ulong)Environment.SystemPageSize != 0)
        {
            error = $"inflight offset 0x{d.MmapOffset:x} is not a page-aligned offset below 0x{MaxSize:x}";
            return null;
        }

        MemoryMapping? mapping = MemoryMapping.TryMapFrontendFile(fd, d.MmapOffset + d.MmapSize, "inflight", requireSealed, out error);
        if (mapping is null)
        {
            return null;
        }

        return new InflightArea(mapping, d.MmapOffset, d.MmapSize, d.NumQueues, d.QueueSize, packed);
    }

    private static bool CheckShape(ushort queues, ushort queueSize, int maxQueues, int maxQueueSize, out string error)
    {
        error = string.Empty;
        if (queues == 0 || queues > maxQueues)
        {
            error = $"inflight buffer for {queues} queues; the device has 1..{maxQueues}";
            return false;
        }

        if (queueSize == 0 || queueSize > maxQueueSize)
        {
            error = $"inflight queue size {queueSize} outside 1..{maxQueueSize} (the largest ring the device accepts)";
            return false;
        }

        return true;
    }

    /// <summary>Takes a reference for a running queue; false once released.</summary>
    public bool TryAcquire() => _references.TryAcquire();

    /// <summary>Drops a reference; the mapping goes away with the last one.</summary>
    public void Release()
    {
        if (_references.Release())
        {
            _mapping.Dispose();
        }
    }
}
