using System.Runtime.InteropServices;

namespace VhostCompat.Interop;

internal static partial class Libc
{
    internal const int F_ADD_SEALS = 1033;
    internal const int F_GET_SEALS = 1034;
    internal const int F_SEAL_SEAL = 0x1;
    internal const int F_SEAL_SHRINK = 0x2;
    internal const int F_SEAL_GROW = 0x4;
    internal const int F_SEAL_WRITE = 0x8;

    // fcntl is variadic; its third argument is an int for every command used here, which the x86-64 and arm64
    // Linux calling conventions pass exactly as a fixed int parameter.
    [LibraryImport(LibraryName, EntryPoint = "fcntl", SetLastError = true)]
    private static partial int Fcntl(int fd, int command, int argument);

    /// <summary>F_GET_SEALS: the file's seals, or -1 and the errno (EINVAL: the file type does not support sealing).</summary>
    internal static int GetSeals(int fd, out int errno)
    {
        int seals = Fcntl(fd, F_GET_SEALS, 0);
        errno = seals < 0 ? Marshal.GetLastPInvokeError() : 0;
        return seals;
    }

    /// <summary>F_ADD_SEALS; returns false and the errno (EPERM: sealing is sealed or the fd is not writable).</summary>
    internal static bool TryAddSeals(int fd, int seals, out int errno)
    {
        bool ok = Fcntl(fd, F_ADD_SEALS, seals) == 0;
        errno = ok ? 0 : Marshal.GetLastPInvokeError();
        return ok;
    }

    /// <summary>The name the kernel gives an open fd (/proc/self/fd): "/memfd:NAME (deleted)" for a memfd.</summary>
    internal static string? FdTarget(int fd)
    {
        try
        {
            return new FileInfo($"/proc/self/fd/{fd}").LinkTarget;
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }
}
