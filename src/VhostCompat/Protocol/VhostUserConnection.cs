using System.Buffers;
using System.IO.Pipelines;
using System.Net.Sockets;
using VhostCompat.Interop;

namespace VhostCompat.Protocol;

/// <summary>
/// A vhost-user stream over a Unix socket. A receive loop moves bytes with recvmsg into a
/// <see cref="Pipe"/> and records, for every batch of SCM_RIGHTS fds, the stream offset of the
/// last byte read with it; the reader hands each decoded message exactly the fds whose offset lies
/// inside that message. Sends go out with one sendmsg each (header, payload and fds together).
/// </summary>
internal sealed class VhostUserConnection : IAsyncDisposable
{
    private readonly Socket _socket;
    private readonly int _fd;
    private readonly Pipe _pipe = new(new PipeOptions(pauseWriterThreshold: 1 << 16, resumeWriterThreshold: 1 << 15, useSynchronizationContext: false));
    private readonly Queue<(long Offset, FileDescriptor[] Fds, bool Truncated)> _fdBatches = new();
    private readonly object _fdLock = new();
    private readonly object _sendLock = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _receiveLoop;
    private readonly TimeSpan _messageTimeout;
    private long _consumed;
    private int _disposed;

    public VhostUserConnection(Socket socket, TimeSpan messageTimeout)
    {
        _socket = socket;
        _fd = (int)socket.SafeHandle.DangerousGetHandle();
        _messageTimeout = messageTimeout;
        _receiveLoop = Task.Run(ReceiveLoopAsync);
    }

    public Socket Socket => _socket;

    private async Task ReceiveLoopAsync()
    {
        PipeWriter writer = _pipe.Writer;
        long received = 0;
        var fds = new List<int>(Libc.MaxFdsPerMessage);
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                Memory<byte> memory = writer.GetMemory(4096);
                fds.Clear();
                int n = Libc.ReceiveWithFds(_fd, memory.Span, fds, out bool truncated);
                if (fds.Count > 0 || truncated)
                {
                    var owned = fds.Select(f => new FileDescriptor(f)).ToArray();
                    if (n <= 0)
                    {
                        // fds without data cannot belong to any message.
                        foreach (var f in owned)
                        {
                            f.Dispose();
                        }
                    }
                    else
                    {
                        // Linux ends a stream read right after the chunk that carried fds, so they
                        // belong to the message holding the last byte of this read (earlier bytes may
                        // be other messages coalesced in front of it).
                        lock (_fdLock)
                        {
                            _fdBatches.Enqueue((received + n - 1, owned, truncated));
                        }
                    }
                }

                if (n == -Libc.EAGAIN)
                {
                    // Zero-byte receive: completes when the socket is readable (the runtime keeps it non-blocking).
                    await _socket.ReceiveAsync(Memory<byte>.Empty, SocketFlags.None, _stop.Token).ConfigureAwait(false);
                    continue;
                }

                if (n < 0)
                {
                    throw new IOException(Libc.ErrorText("recvmsg", -n));
                }

                if (n == 0)
                {
                    break;
                }

                writer.Advance(n);
                received += n;
                FlushResult flush = await writer.FlushAsync(_stop.Token).ConfigureAwait(false);
                if (flush.IsCompleted)
                {
                    break;
                }
            }

            await writer.CompleteAsync().ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            await writer.CompleteAsync().ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException)
        {
            await writer.CompleteAsync(ex).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Reads the next message. Returns null when the peer closed the connection between messages.
    /// Throws <see cref="VhostUserFramingException"/> on a framing violation, a message cut short by
    /// EOF, or a message that did not complete within the message timeout.
    /// </summary>
    public async Task<VhostUserMessage?> ReceiveAsync(CancellationToken cancellationToken)
    {
        PipeReader reader = _pipe.Reader;
        CancellationTokenSource? deadline = null;
        try
        {
            while (true)
            {
                CancellationToken token = deadline?.Token ?? cancellationToken;
                ReadResult result;
                try
                {
                    result = await reader.ReadAsync(token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (deadline is not null && !cancellationToken.IsCancellationRequested)
                {
                    throw new VhostUserFramingException($"incomplete message not finished within {_messageTimeout.TotalSeconds:0.#} s");
                }
                catch (Exception ex) when (ex is IOException or SocketException)
                {
                    throw new VhostUserFramingException($"receive failed: {ex.Message}");
                }

                ReadOnlySequence<byte> buffer = result.Buffer;
                if (MessageFraming.TryDecode(buffer, out MessageHeader header, out byte[] payload, out long length))
                {
                    reader.AdvanceTo(buffer.GetPosition(length));
                    long start = _consumed;
                    _consumed += length;
                    var (fds, truncated) = TakeFds(start, _consumed);
                    return new VhostUserMessage(header, payload, fds, truncated);
                }

                if (result.IsCompleted)
                {
                    if (!buffer.IsEmpty)
                    {
                        throw new VhostUserFramingException($"connection closed inside a message ({buffer.Length} bytes of it received)");
                    }

                    return null;
                }

                if (!buffer.IsEmpty && deadline is null)
                {
                    deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                    deadline.CancelAfter(_messageTimeout);
                }

                reader.AdvanceTo(buffer.Start, buffer.End);
            }
        }
        finally
        {
            deadline?.Dispose();
        }
    }

    private (FileDescriptor[] Fds, bool Truncated) TakeFds(long start, long end)
    {
        List<FileDescriptor>? taken = null;
        bool truncated = false;
        lock (_fdLock)
        {
            while (_fdBatches.Count > 0 && _fdBatches.Peek().Offset < end)
            {
                var batch = _fdBatches.Dequeue();
                if (batch.Offset < start)
                {
                    // Cannot happen with a well-formed stream; never hand such fds to anyone.
                    foreach (var f in batch.Fds)
                    {
                        f.Dispose();
                    }

                    continue;
                }

                truncated |= batch.Truncated;
                (taken ??= []).AddRange(batch.Fds);
            }
        }

        return (taken?.ToArray() ?? [], truncated);
    }

    /// <summary>Sends one message; the fds are duplicated into the peer, the caller keeps its own.</summary>
    public void Send(uint request, uint flags, ReadOnlySpan<byte> payload, ReadOnlySpan<int> fds = default)
    {
        byte[] frame = MessageFraming.Encode(request, flags, payload);
        SendRaw(frame, fds);
    }

    /// <summary>Sends raw bytes (fds attached to the first byte). Used for replies and by test frontends.</summary>
    public void SendRaw(ReadOnlySpan<byte> frame, ReadOnlySpan<int> fds = default)
    {
        lock (_sendLock)
        {
            int offset = 0;
            bool first = true;
            long deadline = Environment.TickCount64 + (long)_messageTimeout.TotalMilliseconds;
            while (offset < frame.Length)
            {
                int n = Libc.SendWithFds(_fd, frame[offset..], first ? fds : default);
                if (n == -Libc.EAGAIN)
                {
                    if (Environment.TickCount64 > deadline)
                    {
                        throw new IOException("send timed out: the peer is not reading");
                    }

                    _socket.Poll(TimeSpan.FromMilliseconds(50), SelectMode.SelectWrite);
                    continue;
                }

                if (n < 0)
                {
                    throw new IOException(Libc.ErrorText("sendmsg", -n));
                }

                first = false;
                offset += n;
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        _stop.Cancel();
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (SocketException)
        {
        }

        try
        {
            // Wait for the loop before closing the fd, so it can never recvmsg on a reused fd number.
            await _receiveLoop.ConfigureAwait(false);
        }
        catch (Exception)
        {
            // The loop reports its errors through the pipe; nothing more to do here.
        }

        _socket.Dispose();

        await _pipe.Reader.CompleteAsync().ConfigureAwait(false);
        lock (_fdLock)
        {
            while (_fdBatches.Count > 0)
            {
                foreach (var f in _fdBatches.Dequeue().Fds)
                {
                    f.Dispose();
                }
            }
        }

        _stop.Dispose();
    }
}
