using System.Buffers.Binary;
using System.Net.Sockets;
using VhostCompat.Interop;
using VhostCompat.Protocol;

namespace VhostCompat.Benchmarks.Soak;

/// <summary>How a misbehaving connection ended, as the frontend saw it.</summary>
internal enum PeerOutcome
{
    /// <summary>The stream was still in sync: a GET_FEATURES sent after the bad input got its reply.</summary>
    Synced,

    /// <summary>The backend closed the connection (the documented CLOSE outcome).</summary>
    Closed,

    /// <summary>Neither within the time limit: the frontend was left waiting (an I5 violation).</summary>
    Hung,

    /// <summary>The soak closed the connection on purpose without waiting (mid-header, mid-message, mid-session).</summary>
    Abandoned,

    /// <summary>A step the soak expected to work failed (a refused or unanswered well-formed request).</summary>
    Failed,
}

/// <summary>
/// A raw vhost-user frontend for the soak: writes any bytes with any fds (SCM_RIGHTS) and reads reply
/// frames, never trusting the stream to stay in sync. The fds it sends remain owned by the caller.
/// </summary>
internal sealed class RawPeer : IDisposable
{
    private const int EAGAIN = 11;
    private readonly Socket _socket;
    private bool _peerGone;

    private RawPeer(Socket socket) => _socket = socket;

    public static async Task<RawPeer> ConnectAsync(string path, TimeSpan timeout) => new(await ConnectSocketAsync(path, timeout).ConfigureAwait(false));

    /// <summary>
    /// Connects to the backend's listener. The SDK accepts one frontend at a time with a backlog of 1, so while it
    /// is still tearing down earlier sessions connect() fails with EAGAIN: retry until <paramref name="timeout"/>.
    /// </summary>
    public static async Task<Socket> ConnectSocketAsync(string path, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                using var cts = new CancellationTokenSource(timeout);
                await s.ConnectAsync(new UnixDomainSocketEndPoint(path), cts.Token).ConfigureAwait(false);
                return s;
            }
            catch (SocketException ex) when (ex.SocketErrorCode is SocketError.WouldBlock or SocketError.TryAgain && DateTime.UtcNow < deadline)
            {
                s.Dispose();
                await Task.Delay(1).ConfigureAwait(false);
            }
            catch
            {
                s.Dispose();
                throw;
            }
        }
    }

    /// <summary>True once a send failed because the backend had already closed its end.</summary>
    public bool PeerGone => _peerGone;

    private int Fd => (int)_socket.SafeHandle.DangerousGetHandle();

    /// <summary>Sends bytes (and fds with the first byte); false when the backend has closed the connection.</summary>
    public bool SendBytes(ReadOnlySpan<byte> bytes, ReadOnlySpan<int> fds = default)
    {
        int sent = 0;
        for (int spins = 0; sent < bytes.Length && !_peerGone; spins++)
        {
            int n = Libc.SendWithFds(Fd, bytes[sent..], sent == 0 ? fds : default);
            if (n == -EAGAIN && spins < 2000)
            {
                Thread.Sleep(1); // the backend is slow to drain; bounded by the spin count
                continue;
            }

            if (n < 0)
            {
                _peerGone = true; // EPIPE, ECONNRESET: the backend closed first
                break;
            }

            sent += n;
        }

        return !_peerGone;
    }

    public bool Send(uint request, uint flags, ReadOnlySpan<byte> payload, ReadOnlySpan<int> fds = default) =>
        SendBytes(MessageFraming.Encode(request, flags, payload), fds);

    public bool Send(FrontendRequest request, ReadOnlySpan<byte> payload = default, ReadOnlySpan<int> fds = default, bool needReply = false) =>
        Send((uint)request, needReply ? MessageHeader.Version | MessageHeader.NeedReplyFlag : MessageHeader.Version, payload, fds);

    /// <summary>Reads one frame; null when the backend closed the connection; throws <see cref="TimeoutException"/> after <paramref name="timeout"/>.</summary>
    public async Task<(MessageHeader Header, byte[] Payload)?> ReceiveAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        var header = new byte[MessageHeader.Length];
        if (!await ReadExactlyAsync(header, cts.Token).ConfigureAwait(false))
        {
            return null;
        }

        var h = MessageHeader.Read(header);
        if (h.Size > MessageHeader.MaxPayloadSize)
        {
            return null; // a garbled reply: treat the stream as dead
        }

        var payload = new byte[h.Size];
        return await ReadExactlyAsync(payload, cts.Token).ConfigureAwait(false) ? (h, payload) : null;
    }

    /// <summary>Sends a request that must be answered with a u64 and returns it (null: closed or a reply of another shape).</summary>
    public async Task<ulong?> RequestU64Async(FrontendRequest request, ReadOnlyMemory<byte> payload, bool needReply, TimeSpan timeout)
    {
        if (!Send(request, payload.Span, default, needReply))
        {
            return null;
        }

        var reply = await ReceiveAsync(timeout).ConfigureAwait(false);
        return reply is { } r && r.Header.Request == (uint)request && r.Payload.Length == 8 ? BinaryPrimitives.ReadUInt64LittleEndian(r.Payload) : null;
    }

    /// <summary>
    /// After bad input: sends GET_FEATURES and reads (discarding acks for earlier requests) until its reply
    /// arrives or the backend closes. Never waits longer than <paramref name="timeout"/> in total.
    /// </summary>
    public async Task<PeerOutcome> SyncAsync(TimeSpan timeout)
    {
        if (!Send(FrontendRequest.GetFeatures))
        {
            return PeerOutcome.Closed;
        }

        var deadline = DateTime.UtcNow + timeout;
        try
        {
            while (true)
            {
                var left = deadline - DateTime.UtcNow;
                if (left <= TimeSpan.Zero)
                {
                    return PeerOutcome.Hung;
                }

                var frame = await ReceiveAsync(left).ConfigureAwait(false);
                if (frame is null)
                {
                    return PeerOutcome.Closed;
                }

                if (frame.Value.Header.Request == (uint)FrontendRequest.GetFeatures && frame.Value.Payload.Length == 8)
                {
                    return PeerOutcome.Synced;
                }
            }
        }
        catch (TimeoutException)
        {
            return PeerOutcome.Hung;
        }
    }

    private async Task<bool> ReadExactlyAsync(byte[] buffer, CancellationToken ct)
    {
        int got = 0;
        while (got < buffer.Length)
        {
            int n;
            try
            {
                n = await _socket.ReceiveAsync(buffer.AsMemory(got), SocketFlags.None, ct).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                throw new TimeoutException("no reply in time");
            }
            catch (SocketException)
            {
                return false;
            }

            if (n == 0)
            {
                return false;
            }

            got += n;
        }

        return true;
    }

    public void Dispose() => _socket.Dispose();
}
