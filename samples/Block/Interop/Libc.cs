using System.Runtime.InteropServices;

namespace VhostCompat.Samples.Block.Interop;

/// <summary>
/// The sample's only libc calls: <c>preadv2</c>/<c>pwritev2</c> with one iovec, which .NET's
/// <see cref="RandomAccess"/> does not offer with flags. <c>RWF_NOWAIT</c> makes a buffered read (or write) fail
/// with EAGAIN instead of blocking when it would have to wait for the disk, so the queue's worker can serve
/// page-cache hits itself and hand only the rest to an I/O thread. Results are raw: bytes, or -errno.
/// </summary>
internal static unsafe partial class Libc
{
    public const int EINTR = 4, EAGAIN = 11, EOPNOTSUPP = 95;

    /// <summary>RWF_NOWAIT (linux/fs.h): do not wait for data that is not immediately available.</summary>
    public const int RWF_NOWAIT = 0x8;

    /// <summary>struct iovec: one buffer of a vectored call.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct IoVec
    {
        public void* Base;
        public nuint Length;
    }

    /// <summary>At most this many buffers per call (well under IOV_MAX, 1024).</summary>
    public const int MaxIoVecs = 256;

    [LibraryImport("libc", EntryPoint = "preadv2", SetLastError = true)]
    private static partial nint PReadV2(int fd, IoVec* iov, int count, long offset, int flags);

    [LibraryImport("libc", EntryPoint = "pwritev2", SetLastError = true)]
    private static partial nint PWriteV2(int fd, IoVec* iov, int count, long offset, int flags);

    /// <summary>One preadv2 into <paramref name="buffer"/>: bytes read (0 at end of file) or -errno.</summary>
    public static long Read(int fd, Span<byte> buffer, long offset, int flags)
    {
        fixed (byte* p = buffer)
        {
            var iov = new IoVec { Base = p, Length = (nuint)buffer.Length };
            nint r = PReadV2(fd, &iov, 1, offset, flags);
            return r >= 0 ? r : -Marshal.GetLastPInvokeError();
        }
    }

    /// <summary>One preadv2 into several buffers: bytes read (0 at end of file) or -errno.</summary>
    public static long ReadVector(int fd, ReadOnlySpan<IoVec> iov, long offset, int flags)
    {
        fixed (IoVec* p = iov)
        {
            nint r = PReadV2(fd, p, iov.Length, offset, flags);
            return r >= 0 ? r : -Marshal.GetLastPInvokeError();
        }
    }

    /// <summary>One pwritev2 from <paramref name="buffer"/>: bytes written or -errno.</summary>
    public static long Write(int fd, ReadOnlySpan<byte> buffer, long offset, int flags)
    {
        fixed (byte* p = buffer)
        {
            var iov = new IoVec { Base = p, Length = (nuint)buffer.Length };
            nint r = PWriteV2(fd, &iov, 1, offset, flags);
            return r >= 0 ? r : -Marshal.GetLastPInvokeError();
        }
    }
}
