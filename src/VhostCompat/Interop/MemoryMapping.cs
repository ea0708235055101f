using System.Runtime.InteropServices;

namespace VhostCompat.Interop;

/// <summary>A shared read/write mapping of a file descriptor; unmapped exactly once.</summary>
internal sealed class MemoryMapping : SafeHandle
{
    private MemoryMapping(nint address, ulong length)
        : base(IntPtr.Zero, ownsHandle: true)
    {
        SetHandle(address);
        Length = length;
    }

    public ulong Length { get; }

    public nint Address => handle;

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle() => Libc.Munmap(handle, (nuint)Length) == 0;

    /// <summary>
    /// Maps the first <paramref name="end"/> bytes of a file a frontend sent (a log or inflight buffer) after
    /// checking that it is a regular file at least that long, so no access through the mapping can fault.
    /// Returns null and a reason naming <paramref name="what"/> on failure.
    /// </summary>
    public static MemoryMapping? TryMapFrontendFile(FileDescriptor fd, ulong end, string what, out string error)
    {
        if (!Libc.TryGetFileInfo(fd.Value, out long fileSize, out uint mode, out int errno))
        {
            error = Libc.ErrorText("fstat", errno);
            return null;
        }

        if ((mode & Libc.S_IFMT) != Libc.S_IFREG || (ulong)fileSize < end)
        {
            error = $"{what} fd is not a regular file of at least {end} bytes";
            return null;
        }

        MemoryMapping? mapping = TryMap(fd.Value, end, out errno);
        error = mapping is null ? Libc.ErrorText("mmap", errno) : string.Empty;
        return mapping;
    }

    /// <summary>Maps <paramref name="length"/> bytes of <paramref name="fd"/> from file offset 0. Returns null and the errno on failure.</summary>
    public static MemoryMapping? TryMap(int fd, ulong length, out int errno)
    {
        nint p = Libc.Mmap(0, (nuint)length, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, fd, 0);
        if (p == Libc.MAP_FAILED)
        {
            errno = Marshal.GetLastPInvokeError();
            return null;
        }

        errno = 0;
        return new MemoryMapping(p, length);
    }
}
