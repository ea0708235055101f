using System.Runtime.InteropServices;

namespace VhostCompat.Fuzz;

/// <summary>Guard pages: an access the SDK's own checks should have stopped becomes a SIGSEGV (an AFL crash) instead of a silent read of a neighbour.</summary>
internal static partial class Native
{
    public const int PROT_NONE = 0;
    public const int PROT_READ = 1;
    public const int PROT_WRITE = 2;
    public const int MAP_PRIVATE = 0x02;
    public const int MAP_ANONYMOUS = 0x20;

    [LibraryImport("libc", EntryPoint = "mprotect", SetLastError = true)]
    private static partial int MProtect(nint address, nuint length, int prot);

    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    private static partial nint MMap(nint address, nuint length, int prot, int flags, int fd, long offset);

    public static void Protect(nint address, int length, int prot)
    {
        if (MProtect(address, (nuint)length, prot) != 0)
        {
            throw new IOException($"mprotect failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    /// <summary>Anonymous read-write memory of <paramref name="length"/> bytes (never unmapped: one per target instance).</summary>
    public static nint Anonymous(int length)
    {
        nint p = MMap(0, (nuint)length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        return p == -1 ? throw new IOException($"mmap failed: errno {Marshal.GetLastPInvokeError()}") : p;
    }
}
