using VhostCompat.Interop;

namespace VhostCompat.Benchmarks.Soak;

/// <summary>The fds one cycle creates to send (eventfds, memfds, pipes, sockets, a directory); all closed when the cycle ends.</summary>
internal sealed class FdBag : IDisposable
{
    private const int O_RDONLY = 0, O_CLOEXEC = 0x80000, O_DIRECTORY = 0x10000;
    private readonly List<int> _fds = [];

    /// <summary>The memfd name the soak's raw frontends give guest RAM (counted as a guest mapping in the backend's maps).</summary>
    public const string MemfdName = "vhostcompat-soak";

    public int EventFd() => Keep(FileDescriptor.CreateEventFd().Detach());

    public int Memfd(long size) => Keep(FileDescriptor.CreateMemfd(MemfdName, size).Detach());

    public int PipeReadEnd()
    {
        var (r, w) = Libc.Pipe();
        Keep(w);
        return Keep(r);
    }

    public int Socket()
    {
        var (a, b) = Libc.SocketPair();
        Keep(b);
        return Keep(a);
    }

    public int Directory() => Keep(Open(System.IO.Path.GetTempPath(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));

    public int DevNull() => Keep(Open("/dev/null", O_RDONLY | O_CLOEXEC));

    /// <summary>Writes <paramref name="data"/> at the start of a fresh memfd (guest RAM contents as the "guest" laid them out).</summary>
    public static unsafe void Fill(int fd, ReadOnlySpan<byte> data)
    {
        fixed (byte* p = data)
        {
            if (Libc.Write(fd, p, (nuint)data.Length) != data.Length)
            {
                throw new IOException("write to memfd failed");
            }
        }
    }

    private static int Open(string path, int flags)
    {
        int fd = Libc.Open(path, flags);
        return fd >= 0 ? fd : throw new IOException($"open {path} failed");
    }

    private int Keep(int fd)
    {
        _fds.Add(fd);
        return fd;
    }

    public void Dispose()
    {
        foreach (int fd in _fds)
        {
            Libc.Close(fd);
        }

        _fds.Clear();
    }
}
