using VhostCompat.Interop;

namespace VhostCompat.Frontend;

/// <summary>
/// The inflight buffer a backend handed to a C# frontend (GET_INFLIGHT_FD, INFLIGHT_SHMFD). A frontend
/// keeps it for the life of the device and passes it back with <see cref="VhostUserFrontend.SetInflightFdAsync"/>
/// after every (re)connection, as QEMU does, so that a restarted backend can resubmit the requests that
/// were in flight when its predecessor died.
/// </summary>
public sealed class InflightBuffer : IDisposable
{
    private readonly FileDescriptor _fd;
    private readonly MemoryMapping _mapping;

    internal InflightBuffer(FileDescriptor fd, MemoryMapping mapping, ulong size, ulong offset, ushort queueCount, ushort queueSize)
    {
        _fd = fd;
        _mapping = mapping;
        Size = size;
        Offset = offset;
        QueueCount = queueCount;
        QueueSize = queueSize;
    }

    /// <summary>Bytes shared (mmap_size).</summary>
    public ulong Size { get; }

    /// <summary>Where the buffer starts in the fd (mmap_offset).</summary>
    public ulong Offset { get; }

    /// <summary>Number of queue regions.</summary>
    public ushort QueueCount { get; }

    /// <summary>Entries per queue region.</summary>
    public ushort QueueSize { get; }

    internal int Fd => _fd.Value;

    /// <summary>The shared bytes (for inspection and fault injection in tests).</summary>
    internal unsafe Span<byte> Bytes => new((byte*)_mapping.Address + Offset, checked((int)Size));

    /// <summary>Unmaps and closes the buffer.</summary>
    public void Dispose()
    {
        _mapping.Dispose();
        _fd.Dispose();
    }
}
