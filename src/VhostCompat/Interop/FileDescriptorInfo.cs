using System.Runtime.InteropServices;

namespace VhostCompat.Interop;

internal static partial class Libc
{
    /// <summary>statfs f_type of hugetlbfs (linux/magic.h HUGETLBFS_MAGIC).</summary>
    internal const long HUGETLBFS_MAGIC = 0x958458f6;

    internal const uint S_IFSOCK = 0xC000;
    internal const int F_SEAL_FUTURE_WRITE = 0x10;
    internal const int F_SEAL_EXEC = 0x20;

    [LibraryImport(LibraryName, EntryPoint = "fstatfs", SetLastError = true)]
    private static unsafe partial int Fstatfs(int fd, byte* statfsBuffer);

    /// <summary>
    /// The file system type (statfs f_type) of an open fd, or -1 and the errno. f_type is the first
    /// member of struct statfs, a long, on x86-64 and on arm64 (the generic layout).
    /// </summary>
    internal static unsafe long FileSystemType(int fd, out int errno)
    {
        byte* buf = stackalloc byte[256];
        if (Fstatfs(fd, buf) != 0)
        {
            errno = Marshal.GetLastPInvokeError();
            return -1;
        }

        errno = 0;
        return *(long*)buf;
    }
}

/// <summary>What kind of object an fd refers to, as far as a trace needs to know.</summary>
internal enum FileDescriptorKind
{
    /// <summary>Not an open fd in this process (fstat failed).</summary>
    Invalid,

    /// <summary>An anonymous memory file (memfd_create), possibly on hugetlbfs.</summary>
    Memfd,

    /// <summary>An eventfd (kick, call, err notifiers).</summary>
    EventFd,

    /// <summary>A socket (the back-end channel of SET_BACKEND_REQ_FD).</summary>
    Socket,

    /// <summary>A regular file with a path (memory-backend-file on tmpfs or a disk).</summary>
    RegularFile,

    /// <summary>A file on hugetlbfs that is not a memfd (memory-backend-file on /dev/hugepages).</summary>
    Hugetlbfs,

    /// <summary>Anything else (pipe, userfaultfd, character device, ...): see the target text.</summary>
    Other,
}

/// <summary>
/// A description of one open fd, taken with fstat, fstatfs, F_GET_SEALS and the /proc/self/fd link; never throws.
/// </summary>
/// <param name="Kind">What the fd is.</param>
/// <param name="Target">The /proc/self/fd link text (<c>/memfd:NAME (deleted)</c>, <c>anon_inode:[eventfd]</c>, <c>socket:[123]</c>, a path), or null.</param>
/// <param name="Size">st_size in bytes (0 when not meaningful or unknown).</param>
/// <param name="Seals">F_GET_SEALS result, or -1 when the file cannot carry seals.</param>
/// <param name="OnHugetlbfs">True when the file lives on hugetlbfs (also for a memfd created with MFD_HUGETLB).</param>
/// <param name="Errno">The errno of a failed fstat (for <see cref="FileDescriptorKind.Invalid"/>), else 0.</param>
internal readonly record struct FileDescriptorInfo(FileDescriptorKind Kind, string? Target, long Size, int Seals, bool OnHugetlbfs, int Errno)
{
    private const uint S_IFCHR = 0x2000;

    /// <summary>Describes <paramref name="fd"/>; the fd is not modified, duplicated or closed.</summary>
    public static FileDescriptorInfo Inspect(int fd)
    {
        if (!Libc.TryGetFileInfo(fd, out long size, out uint mode, out int errno))
        {
            return new(FileDescriptorKind.Invalid, null, 0, -1, false, errno);
        }

        string? target = Libc.FdTarget(fd);
        int seals = Libc.GetSeals(fd, out _);
        bool huge = Libc.FileSystemType(fd, out _) == Libc.HUGETLBFS_MAGIC;
        uint type = mode & Libc.S_IFMT;
        FileDescriptorKind kind;
        if (target is not null && target.StartsWith("/memfd:", StringComparison.Ordinal))
        {
            kind = FileDescriptorKind.Memfd;
        }
        else if (type == Libc.S_IFSOCK)
        {
            kind = FileDescriptorKind.Socket;
        }
        else if (target == "anon_inode:[eventfd]")
        {
            kind = FileDescriptorKind.EventFd;
        }
        else if (huge)
        {
            kind = FileDescriptorKind.Hugetlbfs;
        }
        else if (type == Libc.S_IFREG && target is not null && target.StartsWith('/'))
        {
            kind = FileDescriptorKind.RegularFile;
        }
        else
        {
            kind = FileDescriptorKind.Other;
        }

        // A character device's st_size means nothing; sockets and anonymous inodes report 0 anyway.
        return new(kind, target, type == S_IFCHR ? 0 : size, seals, huge, 0);
    }

    /// <summary>The memfd name without the <c>/memfd:</c> prefix and the <c> (deleted)</c> suffix; null for other kinds.</summary>
    public string? MemfdName
    {
        get
        {
            if (Kind != FileDescriptorKind.Memfd || Target is null)
            {
                return null;
            }

            string name = Target["/memfd:".Length..];
            const string Deleted = " (deleted)";
            return name.EndsWith(Deleted, StringComparison.Ordinal) ? name[..^Deleted.Length] : name;
        }
    }
}
