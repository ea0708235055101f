using System.Runtime.InteropServices;

namespace VhostCompat.Interop;

internal static partial class Libc
{
    internal const int PROT_READ = 0x1;
    internal const int PROT_WRITE = 0x2;
    internal const int MAP_SHARED = 0x01;
    internal const uint MFD_CLOEXEC = 0x1;
    internal const uint MFD_ALLOW_SEALING = 0x2;
    internal static readonly nint MAP_FAILED = -1;

    [LibraryImport(LibraryName, EntryPoint = "mmap", SetLastError = true)]
    internal static partial nint Mmap(nint address, nuint length, int prot, int flags, int fd, long offset);

    [LibraryImport(LibraryName, EntryPoint = "munmap", SetLastError = true)]
    internal static partial int Munmap(nint address, nuint length);

    [LibraryImport(LibraryName, EntryPoint = "memfd_create", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int MemfdCreate(string name, uint flags);

    [LibraryImport(LibraryName, EntryPoint = "ftruncate", SetLastError = true)]
    internal static partial int Ftruncate(int fd, long length);

    [LibraryImport(LibraryName, EntryPoint = "fstat", SetLastError = true)]
    private static unsafe partial int Fstat(int fd, byte* statBuffer);

    internal const uint S_IFMT = 0xF000;
    internal const uint S_IFREG = 0x8000;
    internal const uint S_IFIFO = 0x1000;

    /// <summary>
    /// Size and file type of an open fd. struct stat is read by offset: st_size is at 48 on both
    /// x86-64 and arm64; st_mode is at 24 (x86-64) or 16 (arm64, the generic layout).
    /// </summary>
    internal static unsafe bool TryGetFileInfo(int fd, out long size, out uint mode, out int errno)
    {
        byte* buf = stackalloc byte[256];
        if (Fstat(fd, buf) != 0)
        {
            errno = Marshal.GetLastPInvokeError();
            size = 0;
            mode = 0;
            return false;
        }

        errno = 0;
        size = *(long*)(buf + 48);
        int modeOffset = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 24 : 16;
        mode = *(uint*)(buf + modeOffset);
        return true;
    }

    internal static readonly long PageSize = Environment.SystemPageSize;
}
