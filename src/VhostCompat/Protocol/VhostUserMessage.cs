using VhostCompat.Interop;

namespace VhostCompat.Protocol;

/// <summary>
/// One decoded message with the fds that arrived with it. The message owns the fds: a handler
/// that keeps one calls <see cref="TakeFd"/>; <see cref="Dispose"/> closes every fd not taken.
/// </summary>
internal sealed class VhostUserMessage : IDisposable
{
    private readonly FileDescriptor?[] _fds;

    public VhostUserMessage(MessageHeader header, byte[] payload, FileDescriptor[] fds, bool fdsTruncated = false)
    {
        Header = header;
        Payload = payload;
        _fds = fds;
        FdsTruncated = fdsTruncated;
    }

    public MessageHeader Header { get; }

    public byte[] Payload { get; }

    public int FdCount => _fds.Length;

    /// <summary>True when the kernel dropped fds of this message (MSG_CTRUNC).</summary>
    public bool FdsTruncated { get; }

    public FileDescriptor? PeekFd(int index) => _fds[index];

    public FileDescriptor TakeFd(int index)
    {
        var fd = _fds[index] ?? throw new InvalidOperationException($"fd {index} already taken");
        _fds[index] = null;
        return fd;
    }

    public void Dispose()
    {
        for (int i = 0; i < _fds.Length; i++)
        {
            _fds[i]?.Dispose();
            _fds[i] = null;
        }
    }
}

/// <summary>Framing violation: the byte stream can no longer be trusted and the connection must close.</summary>
internal sealed class VhostUserFramingException : Exception
{
    public VhostUserFramingException(string message)
        : base(message)
    {
    }
}
