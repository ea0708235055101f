using System.Runtime.InteropServices;

namespace VhostCompat.Interop;

/// <summary>
/// Owns one Unix file descriptor and closes it exactly once. Every fd that arrives over the
/// socket is wrapped in one of these immediately, so none can leak on an error path.
/// </summary>
internal sealed class FileDescriptor : SafeHandle
{
    public FileDescriptor(int fd)
        : base(new IntPtr(-1), ownsHandle: true)
    {
        SetHandle(new IntPtr(fd));
    }

    public override bool IsInvalid => handle.ToInt64() < 0;

    /// <summary>The raw descriptor number; valid only while this object is not disposed.</summary>
    public int Value => (int)handle.ToInt64();

    protected override bool ReleaseHandle() => Libc.Close((int)handle.ToInt64()) == 0;

    /// <summary>Hands ownership of the raw fd to the caller.</summary>
    public int Detach()
    {
        int fd = Value;
        SetHandleAsInvalid();
        return fd;
    }

    public static FileDescriptor CreateEventFd(bool nonBlocking = true)
    {
        int fd = Libc.EventFd(0, Libc.EFD_CLOEXEC | (nonBlocking ? Libc.EFD_NONBLOCK : 0));
        if (fd < 0)
        {
            throw new IOException(Libc.ErrorText("eventfd", Marshal.GetLastPInvokeError()));
        }

        return new FileDescriptor(fd);
    }

    public static FileDescriptor CreateMemfd(string name, long size)
    {
        int fd = Libc.MemfdCreate(name, Libc.MFD_CLOEXEC | Libc.MFD_ALLOW_SEALING);
        if (fd < 0)
        {
            throw new IOException(Libc.ErrorText("memfd_create", Marshal.GetLastPInvokeError()));
        }

        var result = new FileDescriptor(fd);
        if (Libc.Ftruncate(fd, size) != 0)
        {
            int e = Marshal.GetLastPInvokeError();
            result.Dispose();
            throw new IOException(Libc.ErrorText("ftruncate", e));
        }

        return result;
    }
}
