using System.Buffers.Binary;
using System.Net.Sockets;

namespace VhostCompat.InteropTests.Harness;

/// <summary>
/// A minimal vhost-user frontend written from the specification, sharing no code with the SDK: header
/// (u32 request, u32 flags = version 1, u32 size) and a u64 reply, over a Unix socket. Only for requests that carry
/// no fds and answer a u64 (GET_FEATURES 1, GET_PROTOCOL_FEATURES 15, GET_QUEUE_NUM 17), to cross-check tools.
/// </summary>
public sealed class CompatRawVhostUser : IDisposable
{
    public const uint GetFeatures = 1;
    public const uint GetProtocolFeatures = 15;
    public const uint GetQueueNum = 17;

    private readonly Socket _socket;

    private CompatRawVhostUser(Socket socket) => _socket = socket;

    public static async Task<CompatRawVhostUser> ConnectAsync(string path, CancellationToken cancellationToken)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), cancellationToken).ConfigureAwait(false);
            return new CompatRawVhostUser(socket);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Sends a payload-less request and reads its u64 reply (checks the reply flag, request and size).</summary>
    public async Task<ulong> RequestU64Async(uint request, CancellationToken cancellationToken)
    {
        var header = new byte[12];
        BinaryPrimitives.WriteUInt32LittleEndian(header, request);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(4), 0x1);
        await _socket.SendAsync(header, SocketFlags.None, cancellationToken).ConfigureAwait(false);
        var reply = new byte[20];
        var got = 0;
        while (got < reply.Length)
        {
            var n = await _socket.ReceiveAsync(reply.AsMemory(got), SocketFlags.None, cancellationToken).ConfigureAwait(false);
            if (n == 0)
            {
                throw new IOException($"the backend closed the connection after {got} of {reply.Length} reply bytes to request {request}");
            }

            got += n;
        }

        var req = BinaryPrimitives.ReadUInt32LittleEndian(reply);
        var flags = BinaryPrimitives.ReadUInt32LittleEndian(reply.AsSpan(4));
        var size = BinaryPrimitives.ReadUInt32LittleEndian(reply.AsSpan(8));
        if (req != request || (flags & 0x4) == 0 || (flags & 0x3) != 1 || size != 8)
        {
            throw new IOException($"bad reply to request {request}: request={req} flags=0x{flags:x} size={size}");
        }

        return BinaryPrimitives.ReadUInt64LittleEndian(reply.AsSpan(12));
    }

    public void Dispose() => _socket.Dispose();
}
