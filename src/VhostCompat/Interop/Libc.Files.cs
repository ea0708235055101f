using System.Runtime.InteropServices;

namespace VhostCompat.Interop;

internal static partial class Libc
{
    [LibraryImport(LibraryName, EntryPoint = "chown", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int ChownNative(string path, int owner, int group);

    /// <summary>Changes the group of <paramref name="path"/> (the owner unchanged); false and errno on failure.</summary>
    internal static bool TryChangeGroup(string path, int gid, out int errno)
    {
        bool ok = ChownNative(path, -1, gid) == 0;
        errno = ok ? 0 : Marshal.GetLastPInvokeError();
        return ok;
    }
}
