using System.Buffers.Binary;
using System.Net.Sockets;
using VhostCompat.Interop;
using VhostCompat.Protocol;

namespace VhostCompat.IntegrationTests.Support;

/// <summary>A hostile frontend: sends any bytes with any fds, and reads whatever comes back.</summary>
internal sealed class RawFrontend : IAsyncDisposable
{
    private readonly Socket _socket;

    private RawFrontend(Socket socket) => _socket = socket;

    public static async Task<RawFrontend> ConnectAsync(string path)
    {
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await s.ConnectAsync(new UnixDomainSocketEndPoint(path));
        return new RawFrontend(s);
    }

    private int Fd => (int)_socket.SafeHandle.DangerousGetHandle();

    public void SendBytes(ReadOnlySpan<byte> bytes, ReadOnlySpan<int> fds = default)
    {
        int n = Libc.SendWithFds(Fd, bytes, fds);
        if (n != bytes.Length)
        {
            throw new IOException($"short send {n}");
        }
    }

    public void Send(uint request, uint flags, ReadOnlySpan<byte> payload, ReadOnlySpan<int> fds = default) =>
        SendBytes(MessageFraming.Encode(request, flags, payload), fds);

    public void Send(FrontendRequest request, ReadOnlySpan<byte> payload = default, ReadOnlySpan<int> fds = default, bool needReply = true) =>
        Send((uint)request, needReply ? 0x9u : 0x1u, payload, fds);

    /// <summary>Reads one reply; null when the backend closed the connection.</summary>
    public async Task<(MessageHeader Header, byte[] Payload)?> ReceiveAsync(TimeSpan? timeout = null)
    {
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(5));
        var header = new byte[MessageHeader.Length];
        if (!await ReadExactlyAsync(header, cts.Token))
        {
            return null;
        }

        var h = MessageHeader.Read(header);
        if (h.Size > 4096)
        {
            throw new InvalidDataException($"reply size {h.Size}");
        }

        var payload = new byte[h.Size];
        if (!await ReadExactlyAsync(payload, cts.Token))
        {
            return null;
        }

        return (h, payload);
    }

    private async Task<bool> ReadExactlyAsync(byte[] buffer, CancellationToken ct)
    {
        int got = 0;
        while (got < buffer.Length)
        {
            int n;
            try
            {
                n = await _socket.ReceiveAsync(buffer.AsMemory(got), SocketFlags.None, ct);
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

    /// <summary>Sends a request with NEED_REPLY and returns the u64 ack (or null if the connection closed).</summary>
    public Task<ulong?> AckAsync(FrontendRequest request, byte[]? payload = null, int[]? fds = null) =>
        AckAsync((uint)request, 0x9, payload, fds);

    /// <summary>Sends raw code/flags and expects a u64 ack for it.</summary>
    public async Task<ulong?> AckAsync(uint request, uint flags, byte[]? payload = null, int[]? fds = null)
    {
        Send(request, flags, payload ?? [], fds ?? []);
        var reply = await ReceiveAsync();
        if (reply is null)
        {
            return null;
        }

        reply.Value.Header.Request.Should().Be(request);
        reply.Value.Header.Flags.Should().Be(0x5u, "replies carry exactly version 1 + REPLY");
        reply.Value.Payload.Length.Should().Be(8);
        return BinaryPrimitives.ReadUInt64LittleEndian(reply.Value.Payload);
    }

    /// <summary>True when the backend closed the connection within the timeout (reads and discards anything else).</summary>
    public async Task<bool> IsClosedAsync(TimeSpan? timeout = null)
    {
        var buf = new byte[256];
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(3));
        try
        {
            while (true)
            {
                int n = await _socket.ReceiveAsync(buf, SocketFlags.None, cts.Token);
                if (n == 0)
                {
                    return true;
                }
            }
        }
        catch (OperationCanceledException)
        {
            return false;
        }
        catch (SocketException)
        {
            return true;
        }
    }

    public ValueTask DisposeAsync()
    {
        _socket.Dispose();
        return ValueTask.CompletedTask;
    }
}
