using VhostCompat.Interop;

namespace VhostCompat.Frontend;

/// <summary>
/// A dirty-page bitmap owned by a C# frontend (one bit per 4 KiB guest page), shared with the
/// backend through SET_LOG_BASE, as QEMU does during live migration.
/// </summary>
public sealed class DirtyPageLog : IDisposable
{
    private readonly FileDescriptor _fd;
    private readonly MemoryMapping _mapping;

    /// <summary>Creates a zeroed log covering guest physical addresses below <paramref name="guestMemoryEnd"/>.</summary>
    public DirtyPageLog(ulong guestMemoryEnd)
    {
        ulong bytes = Math.Max(8, ((guestMemoryEnd >> 12) + 7) / 8);
        Size = (bytes + (ulong)Libc.PageSize - 1) & ~((ulong)Libc.PageSize - 1);
        _fd = FileDescriptor.CreateMemfd("vhostcompat-log", (long)Size);
        _mapping = MemoryMapping.TryMap(_fd.Value, Size, out int errno) ?? throw new IOException(Libc.ErrorText("mmap", errno));
    }

    /// <summary>Size of the bitmap in bytes (page-aligned).</summary>
    public ulong Size { get; }

    internal int Fd => _fd.Value;

    /// <summary>True when the backend marked the page holding <paramref name="guestPhysicalAddress"/>.</summary>
    public unsafe bool IsDirty(ulong guestPhysicalAddress)
    {
        ulong page = guestPhysicalAddress >> 12;
        if (page / 8 >= Size)
        {
            return false;
        }

        return (Volatile.Read(ref *((byte*)_mapping.Address + (page / 8))) & (1 << (int)(page % 8))) != 0;
    }

    /// <summary>Number of dirty pages.</summary>
    public unsafe long CountDirty()
    {
        long n = 0;
        var span = new ReadOnlySpan<byte>((void*)_mapping.Address, (int)Size);
        foreach (byte b in span)
        {
            n += System.Numerics.BitOperations.PopCount(b);
        }

        return n;
    }

    /// <summary>Clears every bit (what QEMU does each time it harvests the log).</summary>
    public unsafe void Clear() => new Span<byte>((void*)_mapping.Address, (int)Size).Clear();

    /// <summary>Unmaps and closes the log.</summary>
    public void Dispose()
    {
        _mapping.Dispose();
        _fd.Dispose();
    }
}
