using System.Runtime.InteropServices;

namespace VhostCompat.Interop;

internal static partial class Libc
{
    internal const int SOL_SOCKET = 1;
    internal const int SCM_RIGHTS = 1;
    internal const int MSG_CTRUNC = 0x8;
    internal const int MSG_TRUNC = 0x20;
    internal const int MSG_DONTWAIT = 0x40;
    internal const int MSG_NOSIGNAL = 0x4000;
    internal const int MSG_CMSG_CLOEXEC = 0x40000000;

    /// <summary>Largest number of fds one vhost-user message may carry (SET_MEM_TABLE with 8 regions), plus slack to detect excess.</summary>
    internal const int MaxFdsPerMessage = 16;

    [StructLayout(LayoutKind.Sequential)]
    internal struct IoVec
    {
        public nint Base;
        public nuint Length;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct MsgHdr
    {
        public nint Name;
        public uint NameLength;
        public nint Iov;
        public nuint IovLength;
        public nint Control;
        public nuint ControlLength;
        public int Flags;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct CmsgHdr
    {
        public nuint Length;
        public int Level;
        public int Type;
    }

    [LibraryImport(LibraryName, EntryPoint = "sendmsg", SetLastError = true)]
    internal static unsafe partial nint SendMsg(int fd, MsgHdr* msg, int flags);

    [LibraryImport(LibraryName, EntryPoint = "recvmsg", SetLastError = true)]
    internal static unsafe partial nint RecvMsg(int fd, MsgHdr* msg, int flags);

    private static int CmsgAlign(int length) => (length + nint.Size - 1) & ~(nint.Size - 1);

    internal static int CmsgSpace(int dataLength) => CmsgAlign(sizeof(long) * 2) + CmsgAlign(dataLength);

    internal static int CmsgLen(int dataLength) => CmsgAlign(sizeof(long) * 2) + dataLength;

    /// <summary>
    /// Receives bytes and any SCM_RIGHTS fds without blocking. Received fds are close-on-exec.
    /// Returns the byte count (0 = orderly shutdown), or -errno. <paramref name="truncated"/> is set
    /// when the kernel dropped fds because the control buffer was too small (MSG_CTRUNC); the fds
    /// that did arrive are still returned so the caller can close them.
    /// </summary>
    internal static unsafe int ReceiveWithFds(int socketFd, Span<byte> buffer, List<int> fds, out bool truncated)
    {
        truncated = false;
        int controlSize = CmsgSpace(sizeof(int) * MaxFdsPerMessage);
        byte* control = stackalloc byte[controlSize];
        new Span<byte>(control, controlSize).Clear();
        fixed (byte* data = buffer)
        {
            IoVec iov = new() { Base = (nint)data, Length = (nuint)buffer.Length };
            MsgHdr msg = new() { Iov = (nint)(&iov), IovLength = 1, Control = (nint)control, ControlLength = (nuint)controlSize };
            nint n;
            do
            {
                n = RecvMsg(socketFd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
            }
            while (n < 0 && Marshal.GetLastPInvokeError() == EINTR);
            if (n < 0)
            {
                return -Marshal.GetLastPInvokeError();
            }

            truncated = (msg.Flags & MSG_CTRUNC) != 0;
            ExtractFds(control, (int)msg.ControlLength, fds);
            return (int)n;
        }
    }

    private static unsafe void ExtractFds(byte* control, int controlLength, List<int> fds)
    {
        int headerSize = CmsgAlign(sizeof(CmsgHdr));
        int offset = 0;
        while (offset + sizeof(CmsgHdr) <= controlLength)
        {
            CmsgHdr* h = (CmsgHdr*)(control + offset);
            int len = (int)h->Length;
            if (len < sizeof(CmsgHdr) || offset + len > controlLength)
            {
                break;
            }

            if (h->Level == SOL_SOCKET && h->Type == SCM_RIGHTS)
            {
                int count = (len - headerSize) / sizeof(int);
                int* p = (int*)(control + offset + headerSize);
                for (int i = 0; i < count; i++)
                {
                    fds.Add(p[i]);
                }
            }

            offset += CmsgAlign(len);
        }
    }

    /// <summary>
    /// Sends bytes with optional SCM_RIGHTS fds (the fds are duplicated by the kernel; the caller
    /// keeps ownership). Never raises SIGPIPE. Returns the byte count or -errno.
    /// </summary>
    internal static unsafe int SendWithFds(int socketFd, ReadOnlySpan<byte> buffer, ReadOnlySpan<int> fds)
    {
        if (fds.Length > MaxFdsPerMessage)
        {
            throw new ArgumentOutOfRangeException(nameof(fds), "too many fds for one message");
        }

        int controlSize = fds.Length == 0 ? 0 : CmsgSpace(sizeof(int) * fds.Length);
        byte* control = stackalloc byte[Math.Max(controlSize, 1)];
        if (controlSize > 0)
        {
            new Span<byte>(control, controlSize).Clear();
            CmsgHdr* h = (CmsgHdr*)control;
            h->Length = (nuint)CmsgLen(sizeof(int) * fds.Length);
            h->Level = SOL_SOCKET;
            h->Type = SCM_RIGHTS;
            int* p = (int*)(control + CmsgAlign(sizeof(CmsgHdr)));
            for (int i = 0; i < fds.Length; i++)
            {
                p[i] = fds[i];
            }
        }

        fixed (byte* data = buffer)
        {
            IoVec iov = new() { Base = (nint)data, Length = (nuint)buffer.Length };
            MsgHdr msg = new()
            {
                Iov = (nint)(&iov),
                IovLength = 1,
                Control = controlSize > 0 ? (nint)control : 0,
                ControlLength = (nuint)controlSize,
            };
            nint n;
            do
            {
                n = SendMsg(socketFd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
            }
            while (n < 0 && Marshal.GetLastPInvokeError() == EINTR);
            return n < 0 ? -Marshal.GetLastPInvokeError() : (int)n;
        }
    }
}

internal static partial class Libc
{
    internal const int AF_UNIX = 1;
    internal const int SOCK_STREAM = 1;
    internal const int SOCK_CLOEXEC = 0x80000;

    [LibraryImport(LibraryName, EntryPoint = "socketpair", SetLastError = true)]
    private static unsafe partial int SocketPairRaw(int domain, int type, int protocol, int* sv);

    /// <summary>Creates a connected pair of Unix stream sockets (close-on-exec).</summary>
    internal static unsafe (int, int) SocketPair()
    {
        int* sv = stackalloc int[2];
        if (SocketPairRaw(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        {
            throw new IOException(ErrorText("socketpair", Marshal.GetLastPInvokeError()));
        }

        return (sv[0], sv[1]);
    }
}
