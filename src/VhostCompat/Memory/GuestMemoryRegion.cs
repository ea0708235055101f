using VhostCompat.Interop;
using VhostCompat.Protocol;

namespace VhostCompat.Memory;

/// <summary>
/// One guest memory region mapped into this process. Reference-counted: a memory table holds a
/// reference to each of its regions, and the mapping is removed only when the last table (and
/// with it the last worker lease) that uses the region is released.
/// </summary>
internal sealed class GuestMemoryRegion
{
    private readonly MemoryMapping _mapping;
    private RefCount _references = new();

    private GuestMemoryRegion(MemoryRegionPayload description, MemoryMapping mapping)
    {
        Description = description;
        _mapping = mapping;
        Base = mapping.Address + (nint)description.MmapOffset;
    }

    public MemoryRegionPayload Description { get; }

    public ulong GuestPhysicalAddress => Description.GuestPhysicalAddress;

    public ulong Size => Description.MemorySize;

    public ulong UserspaceAddress => Description.UserspaceAddress;

    /// <summary>Address in this process of the region's first byte.</summary>
    public nint Base { get; }

    /// <summary>Checks a region description for arithmetic that would wrap or is empty. Returns null when valid.</summary>
    public static string? ValidateDescription(MemoryRegionPayload d)
    {
        if (d.MemorySize == 0)
        {
            return "region size is 0";
        }

        if (d.GuestPhysicalAddress > ulong.MaxValue - d.MemorySize)
        {
            return $"guest physical range 0x{d.GuestPhysicalAddress:x}+0x{d.MemorySize:x} overflows";
        }

        if (d.UserspaceAddress > ulong.MaxValue - d.MemorySize)
        {
            return $"frontend address range 0x{d.UserspaceAddress:x}+0x{d.MemorySize:x} overflows";
        }

        if (d.MmapOffset > ulong.MaxValue - d.MemorySize)
        {
            return $"mmap offset 0x{d.MmapOffset:x}+0x{d.MemorySize:x} overflows";
        }

        if (d.MmapOffset + d.MemorySize > long.MaxValue)
        {
            return "region end exceeds the largest file offset";
        }

        return null;
    }

    /// <summary>
    /// Maps a region from its fd (which the caller keeps and closes). The fd must be a regular file
    /// (memfd, hugetlbfs or tmpfs file) at least <c>mmap_offset + size</c> long: touching a mapping
    /// beyond the end of its file raises SIGBUS, which .NET cannot catch. So before its size is checked the
    /// file is sealed against shrinking (<see cref="FrontendFileSeals"/>): a frontend that truncates it later
    /// gets EPERM instead of killing the backend. With requireSealed, files that cannot be sealed are refused.
    /// </summary>
    public static GuestMemoryRegion? TryMap(MemoryRegionPayload d, FileDescriptor fd, out string error) => TryMap(d, fd, requireSealed: false, out error);

    /// <inheritdoc cref="TryMap(MemoryRegionPayload, FileDescriptor, out string)"/>
    public static GuestMemoryRegion? TryMap(MemoryRegionPayload d, FileDescriptor fd, bool requireSealed, out string error)
    {
        error = ValidateDescription(d) ?? string.Empty;
        if (error.Length != 0)
        {
            return null;
        }

        ulong end = d.MmapOffset + d.MemorySize;
        if (!MemoryMapping.TryCheckFrontendFile(fd, end, "region", requireSealed, out FileSealing sealing, out long fileSize, out error))
        {
            return null;
        }

        // Map from offset 0 (as DPDK does) so a mmap_offset that is not page-aligned still works.
        ulong page = (ulong)Libc.PageSize;
        ulong mapLength = end + page - 1 < end ? end : (end + page - 1) & ~(page - 1);
        if (mapLength > (ulong)fileSize)
        {
            mapLength = end;
        }

        MemoryMapping? mapping = MemoryMapping.TryMap(fd.Value, mapLength, out int errno);
        if (mapping is null)
        {
            error = Libc.ErrorText("mmap", errno);
            return null;
        }

        return new GuestMemoryRegion(d, mapping) { Sealing = sealing };
    }

    /// <summary>Whether the region's file is protected against shrinking (Unsealable: a frontend truncating it would fault the backend).</summary>
    public FileSealing Sealing { get; private init; }

    public bool Matches(MemoryRegionPayload d) =>
        d.GuestPhysicalAddress == GuestPhysicalAddress && d.MemorySize == Size && d.UserspaceAddress == UserspaceAddress;

    public void AddRef() => _references.Add();

    public void Release()
    {
        if (_references.Release())
        {
            _mapping.Dispose();
        }
    }

    /// <summary>Translates [address, address+length) in the given address space to a host pointer, or returns false.</summary>
    public bool TryTranslate(ulong address, ulong length, bool userspace, out nint host)
    {
        ulong start = userspace ? UserspaceAddress : GuestPhysicalAddress;
        host = 0;
        if (address < start)
        {
            return false;
        }

        ulong offset = address - start;
        if (offset >= Size || length > Size - offset)
        {
            return false;
        }

        host = Base + (nint)offset;
        return true;
    }
}
