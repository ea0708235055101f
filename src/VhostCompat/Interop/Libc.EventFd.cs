using System.Runtime.InteropServices;

namespace VhostCompat.Interop;

internal static partial class Libc
{
    internal const int EFD_CLOEXEC = 0x80000;
    internal const int EFD_NONBLOCK = 0x800;

    [LibraryImport(LibraryName, EntryPoint = "eventfd", SetLastError = true)]
    internal static partial int EventFd(uint initialValue, int flags);

    /// <summary>Adds 1 to an eventfd counter. Returns 0 or -errno (EAGAIN if the counter is saturated).</summary>
    internal static unsafe int EventFdSignal(int fd)
    {
        ulong one = 1;
        nint n;
        do
        {
            n = Write(fd, &one, sizeof(ulong));
        }
        while (n < 0 && Marshal.GetLastPInvokeError() == EINTR);
        return n == sizeof(ulong) ? 0 : -Marshal.GetLastPInvokeError();
    }

    /// <summary>Reads (and resets) an eventfd counter. Returns the count, 0 if nothing was pending on a non-blocking fd, or -errno.</summary>
    internal static unsafe long EventFdDrain(int fd)
    {
        ulong value = 0;
        nint n;
        do
        {
            n = Read(fd, &value, sizeof(ulong));
        }
        while (n < 0 && Marshal.GetLastPInvokeError() == EINTR);
        if (n == sizeof(ulong))
        {
            return (long)value;
        }

        int errno = Marshal.GetLastPInvokeError();
        return errno == EAGAIN ? 0 : -errno;
    }
}
