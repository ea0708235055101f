using System.Runtime.InteropServices;

namespace VhostCompat.Interop;

internal static partial class Libc
{
    internal const int EPOLL_CLOEXEC = 0x80000;
    internal const int EPOLL_CTL_ADD = 1;
    internal const int EPOLL_CTL_DEL = 2;
    internal const int EPOLL_CTL_MOD = 3;
    internal const uint EPOLLIN = 0x001;
    internal const uint EPOLLERR = 0x008;
    internal const uint EPOLLHUP = 0x010;

    /// <summary>struct epoll_event on x86-64: packed, 12 bytes.</summary>
    [StructLayout(LayoutKind.Sequential, Pack = 1)]
    internal struct EpollEventPacked
    {
        public uint Events;
        public ulong Data;
    }

    /// <summary>struct epoll_event elsewhere (arm64): naturally aligned, 16 bytes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct EpollEventAligned
    {
        public uint Events;
        public ulong Data;
    }

    private static readonly bool EpollPacked = RuntimeInformation.ProcessArchitecture == Architecture.X64;

    [LibraryImport(LibraryName, EntryPoint = "epoll_create1", SetLastError = true)]
    internal static partial int EpollCreate1(int flags);

    [LibraryImport(LibraryName, EntryPoint = "epoll_ctl", SetLastError = true)]
    private static unsafe partial int EpollCtlRaw(int epfd, int op, int fd, void* ev);

    [LibraryImport(LibraryName, EntryPoint = "epoll_wait", SetLastError = true)]
    private static unsafe partial int EpollWaitRaw(int epfd, void* events, int maxEvents, int timeoutMs);

    internal static unsafe int EpollCtl(int epfd, int op, int fd, uint events, ulong data)
    {
        if (EpollPacked)
        {
            EpollEventPacked ev = new() { Events = events, Data = data };
            return EpollCtlRaw(epfd, op, fd, &ev) == 0 ? 0 : -Marshal.GetLastPInvokeError();
        }

        EpollEventAligned ev2 = new() { Events = events, Data = data };
        return EpollCtlRaw(epfd, op, fd, &ev2) == 0 ? 0 : -Marshal.GetLastPInvokeError();
    }

    /// <summary>Waits for events; fills <paramref name="data"/> with each ready fd's user data. Returns the count, or -errno (EINTR is reported as 0).</summary>
    internal static unsafe int EpollWait(int epfd, Span<ulong> data, Span<uint> events, int timeoutMs)
    {
        int max = Math.Min(data.Length, 64);
        if (EpollPacked)
        {
            EpollEventPacked* evs = stackalloc EpollEventPacked[max];
            int n = EpollWaitRaw(epfd, evs, max, timeoutMs);
            if (n < 0)
            {
                int e = Marshal.GetLastPInvokeError();
                return e == EINTR ? 0 : -e;
            }

            for (int i = 0; i < n; i++)
            {
                data[i] = evs[i].Data;
                events[i] = evs[i].Events;
            }

            return n;
        }
        else
        {
            EpollEventAligned* evs = stackalloc EpollEventAligned[max];
            int n = EpollWaitRaw(epfd, evs, max, timeoutMs);
            if (n < 0)
            {
                int e = Marshal.GetLastPInvokeError();
                return e == EINTR ? 0 : -e;
            }

            for (int i = 0; i < n; i++)
            {
                data[i] = evs[i].Data;
                events[i] = evs[i].Events;
            }

            return n;
        }
    }
}
