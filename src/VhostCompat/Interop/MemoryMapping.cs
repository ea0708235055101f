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
    /// checking that it is a regular file at least that long and sealing it against shrinking, so no access through
    /// the mapping can fault. Returns null and a reason naming <paramref name="what"/> on failure.
    /// </summary>
    public static MemoryMapping? TryMapFrontendFile(FileDescriptor fd, ulong end, string what, bool requireSealed, out string error)
    {
        if (!TryCheckFrontendFile(fd, end, what, requireSealed, out _, out _, out error))
        {
            return null;
        }

        MemoryMapping? mapping = TryMap(fd.Value, end, out int errno);
        error = mapping is null ? Libc.ErrorText("mmap", errno) : string.Empty;
        return mapping;
    }

    /// <summary>
    /// Seals a frontend file against shrinking (<see cref="FrontendFileSeals"/>), then checks that it is a regular
    /// file of at least <paramref name="end"/> bytes. The seal comes first: a truncate racing with the check then fails.
    /// </summary>
    public static bool TryCheckFrontendFile(FileDescriptor fd, ulong end, string what, bool requireSealed, out FileSealing sealing, out long fileSize, out string error)
    {
        fileSize = 0;
        if (!Libc.TryGetFileInfo(fd.Value, out _, out uint mode, out int errno))
        {
            sealing = FileSealing.Unsealable;
            error = Libc.ErrorText("fstat", errno);
            return false;
        }

        if ((mode & Libc.S_IFMT) != Libc.S_IFREG)
        {
            sealing = FileSealing.Unsealable;
            error = $"{what} fd is not a regular memory file (file type 0{Convert.ToString(mode & Libc.S_IFMT, 8)})";
            return false;
        }

        if (!FrontendFileSeals.TrySecure(fd, what, requireSealed, out sealing, out error))
        {
            return false;
        }

        if (!Libc.TryGetFileInfo(fd.Value, out fileSize, out _, out errno))
        {
            error = Libc.ErrorText("fstat", errno);
            return false;
        }

        if ((ulong)fileSize < end)
        {
            error = $"{what} needs {end} bytes of its fd but the file has {fileSize}";
            return false;
        }

        return true;
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
