using System.Runtime.InteropServices;
using VhostCompat.Interop;

namespace VhostCompat.Tests.Support;

internal static class Memfd
{
    private static int _counter;

    /// <summary>A unique memfd name so /proc/self/maps lines can be attributed to one test even when tests run in parallel.</summary>
    public static string UniqueName(string prefix) =>
        $"{prefix}-{Environment.ProcessId}-{Interlocked.Increment(ref _counter)}-{Guid.NewGuid():N}";

    public static FileDescriptor Create(long size, string? name = null) =>
        FileDescriptor.CreateMemfd(name ?? UniqueName("vhc-test"), size);

    /// <summary>Reads the whole file behind <paramref name="fd"/> by reopening it through /proc/self/fd.</summary>
    public static byte[] ReadAll(FileDescriptor fd) => File.ReadAllBytes($"/proc/self/fd/{fd.Value}");

    /// <summary>Number of /proc/self/maps lines whose path mentions <paramref name="name"/>.</summary>
    public static int MapsLinesMentioning(string name) =>
        File.ReadAllLines("/proc/self/maps").Count(l => l.Contains(name, StringComparison.Ordinal));

    /// <summary>A second, independent shared mapping of the whole fd (unmapped on dispose).</summary>
    public static MemoryMapping MapAgain(FileDescriptor fd, ulong length) =>
        MemoryMapping.TryMap(fd.Value, length, out int errno) ?? throw new IOException(Libc.ErrorText("mmap", errno));

    public static unsafe byte ReadByte(nint address) => *(byte*)address;

    public static unsafe void WriteByte(nint address, byte value) => *(byte*)address = value;

    /// <summary>Opens a file read-only and returns an owned duplicate of its descriptor.</summary>
    public static FileDescriptor OpenReadOnly(string path)
    {
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read);
        int fd = Libc.Dup((int)handle.DangerousGetHandle());
        if (fd < 0)
        {
            throw new IOException(Libc.ErrorText("dup", Marshal.GetLastPInvokeError()));
        }

        return new FileDescriptor(fd);
    }
}
