using System.Runtime.InteropServices;

namespace VhostCompat.Interop;

/// <summary>
/// The only place in VhostCompat that calls libc. One partial file per syscall family;
/// constants keep their native names so they can be checked against the man pages.
/// </summary>
internal static partial class Libc
{
    internal const string LibraryName = "libc";

    internal const int EINTR = 4;
    internal const int EAGAIN = 11;
    internal const int EBADF = 9;

    /// <summary>Builds the message for a failed call from the saved errno.</summary>
    internal static string ErrorText(string call, int errno) =>
        $"{call} failed: errno {errno} ({Marshal.GetPInvokeErrorMessage(errno)})";

    [LibraryImport(LibraryName, EntryPoint = "close", SetLastError = true)]
    internal static partial int Close(int fd);

    [LibraryImport(LibraryName, EntryPoint = "read", SetLastError = true)]
    internal static unsafe partial nint Read(int fd, void* buffer, nuint count);

    [LibraryImport(LibraryName, EntryPoint = "write", SetLastError = true)]
    internal static unsafe partial nint Write(int fd, void* buffer, nuint count);

    internal const int O_RDONLY = 0;
    internal const int O_DIRECTORY = 0x10000;
    internal const int O_CLOEXEC = 0x80000;

    [LibraryImport(LibraryName, EntryPoint = "dup", SetLastError = true)]
    internal static partial int Dup(int fd);

    [LibraryImport(LibraryName, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int Open(string path, int flags);

    [LibraryImport(LibraryName, EntryPoint = "fsync", SetLastError = true)]
    internal static partial int Fsync(int fd);

    /// <summary>fsyncs a directory so a rename inside it is durable. Returns 0 or -errno.</summary>
    internal static int FsyncDirectory(string path)
    {
        int fd = Open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
        {
            return -Marshal.GetLastPInvokeError();
        }

        int r = Fsync(fd) == 0 ? 0 : -Marshal.GetLastPInvokeError();
        Close(fd);
        return r;
    }

    [LibraryImport(LibraryName, EntryPoint = "pipe2", SetLastError = true)]
    private static unsafe partial int Pipe2(int* fds, int flags);

    /// <summary>Creates a close-on-exec pipe: (read end, write end).</summary>
    internal static unsafe (int Read, int Write) Pipe()
    {
        int* fds = stackalloc int[2];
        if (Pipe2(fds, O_CLOEXEC) != 0)
        {
            throw new IOException(ErrorText("pipe2", Marshal.GetLastPInvokeError()));
        }

        return (fds[0], fds[1]);
    }

}
