using VhostCompat.Interop;

namespace VhostCompat.Frontend;

/// <summary>
/// A block of "guest RAM" owned by a C# frontend: a memfd mapped into this process, shared with
/// the backend through SET_MEM_TABLE or ADD_MEM_REG. Its frontend address (the address the
/// backend receives as <c>userspace_addr</c>) is this process's mapping address, as with QEMU.
/// </summary>
public sealed class GuestMemory : IDisposable
{
    private readonly FileDescriptor _fd;
    private readonly MemoryMapping _mapping;

    /// <summary>Creates <paramref name="size"/> bytes of zeroed memory at guest physical address <paramref name="guestPhysicalAddress"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The size is 0, not page-aligned, or the range wraps.</exception>
    /// <exception cref="IOException">memfd_create, ftruncate or mmap failed.</exception>
    public GuestMemory(ulong guestPhysicalAddress, ulong size)
    {
        if (size == 0 || size % (ulong)Libc.PageSize != 0 || guestPhysicalAddress > ulong.MaxValue - size)
        {
            throw new ArgumentOutOfRangeException(nameof(size), "size must be a non-zero multiple of the page size and the range must not wrap");
        }

        GuestPhysicalAddress = guestPhysicalAddress;
        Size = size;
        _fd = FileDescriptor.CreateMemfd("vhostcompat-guest", (long)size);
        _mapping = MemoryMapping.TryMap(_fd.Value, size, out int errno) ?? throw new IOException(Libc.ErrorText("mmap", errno));
    }

    /// <summary>Guest physical address of the first byte.</summary>
    public ulong GuestPhysicalAddress { get; }

    /// <summary>Size in bytes.</summary>
    public ulong Size { get; }

    /// <summary>The frontend (this process's) virtual address of the first byte; ring addresses are given in this space.</summary>
    public ulong FrontendAddress => (ulong)_mapping.Address;

    /// <summary>Offset of the region inside its fd (always 0 here).</summary>
    public ulong MmapOffset => 0;

    internal int Fd => _fd.Value;

    /// <summary>Converts a guest physical address inside this block to its frontend address.</summary>
    public ulong ToFrontendAddress(ulong guestPhysicalAddress) => FrontendAddress + Offset(guestPhysicalAddress, 0);

    /// <summary>Copies bytes into guest memory at a guest physical address.</summary>
    public unsafe void Write(ulong guestPhysicalAddress, ReadOnlySpan<byte> data)
    {
        ulong offset = Offset(guestPhysicalAddress, (ulong)data.Length);
        data.CopyTo(new Span<byte>((byte*)_mapping.Address + offset, data.Length));
    }

    /// <summary>Copies bytes out of guest memory at a guest physical address.</summary>
    public unsafe void Read(ulong guestPhysicalAddress, Span<byte> destination)
    {
        ulong offset = Offset(guestPhysicalAddress, (ulong)destination.Length);
        new ReadOnlySpan<byte>((byte*)_mapping.Address + offset, destination.Length).CopyTo(destination);
    }

    private ulong Offset(ulong gpa, ulong length)
    {
        if (gpa < GuestPhysicalAddress || gpa - GuestPhysicalAddress > Size || length > Size - (gpa - GuestPhysicalAddress))
        {
            throw new ArgumentOutOfRangeException(nameof(gpa), $"0x{gpa:x}+{length} is outside guest memory 0x{GuestPhysicalAddress:x}+0x{Size:x}");
        }

        return gpa - GuestPhysicalAddress;
    }

    /// <summary>Unmaps and closes the memory (the backend keeps its own mapping until it drops it).</summary>
    public void Dispose()
    {
        _mapping.Dispose();
        _fd.Dispose();
    }
}
