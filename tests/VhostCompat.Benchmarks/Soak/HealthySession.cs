using System.Buffers.Binary;
using VhostCompat.Frontend;
using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.Benchmarks.Soak;

/// <summary>The three samples the soak drives, and the queue it uses on each.</summary>
internal enum SoakDevice
{
    Net,
    Block,
    Rng,
}

/// <summary>
/// A well-behaved frontend session built with the SDK's own <see cref="VhostUserFrontend"/>: full
/// negotiation, 1 MiB of memfd guest RAM, one split ring (size 16) laid out by hand, kick and call
/// eventfds, and one device request: an rng buffer, a net TX frame, or a blk GET_ID.
/// </summary>
internal sealed class HealthySession : IAsyncDisposable
{
    private const ulong RamSize = 1 << 20, Desc = 0x0, Avail = 0x1000, Used = 0x2000, Buf = 0x3000;
    private const int RingSize = 16;
    private const ushort Next = 1, Write = 2;
    private readonly SoakDevice _device;
    private readonly VhostUserFrontend _fe;
    private readonly GuestMemory _mem = new(0, RamSize);
    private readonly EventNotifier _kick = new(), _call = new();

    private HealthySession(SoakDevice device, VhostUserFrontend fe)
    {
        _device = device;
        _fe = fe;
    }

    public VhostUserFrontend Frontend => _fe;

    /// <summary>Rng and Block serve on queue 0; Net's queue 1 is TX of the first pair.</summary>
    public int Queue => _device == SoakDevice.Net ? 1 : 0;

    /// <summary>Connects, negotiates, sets the memory table and starts the ring (every step waits for its ack).</summary>
    public static async Task<HealthySession> OpenAsync(string path, SoakDevice device, TimeSpan timeout)
    {
        var fe = VhostUserFrontend.FromConnectedSocket(await RawPeer.ConnectSocketAsync(path, timeout).ConfigureAwait(false), timeout);
        var s = new HealthySession(device, fe);
        try
        {
            // Split ring only (laid out below); REPLY_ACK so every set-up step is confirmed.
            await fe.NegotiateAsync(ulong.MaxValue & ~VirtioFeatureBits.RingPacked, VhostUserProtocolFeatures.ReplyAck | VhostUserProtocolFeatures.Mq | VhostUserProtocolFeatures.Config).ConfigureAwait(false);
            await fe.SetMemTableAsync([s._mem]).ConfigureAwait(false);
            int q = s.Queue;
            await fe.SetVringNumAsync(q, RingSize).ConfigureAwait(false);
            await fe.SetVringBaseAsync(q, 0).ConfigureAwait(false);
            await fe.SetVringAddrAsync(q, s._mem.ToFrontendAddress(Desc), s._mem.ToFrontendAddress(Used), s._mem.ToFrontendAddress(Avail)).ConfigureAwait(false);
            await fe.SetVringCallAsync(q, s._call).ConfigureAwait(false);
            await fe.SetVringKickAsync(q, s._kick).ConfigureAwait(false);
            await fe.SetVringEnableAsync(q, true).ConfigureAwait(false);
            return s;
        }
        catch
        {
            await s.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Makes one request available as head 0 and kicks.</summary>
    public void Post()
    {
        switch (_device)
        {
            case SoakDevice.Rng:
                Descriptor(0, Buf, 64, Write, 0);
                break;
            case SoakDevice.Net:
                var frame = new byte[12 + 60]; // virtio_net_hdr_v1 (all zero), then a broadcast ARP-typed frame
                frame.AsSpan(12, 6).Fill(0xFF);
                frame[18] = 0x02;
                frame[23] = 0x01;
                frame[24] = 0x08;
                frame[25] = 0x06;
                _mem.Write(Buf, frame);
                Descriptor(0, Buf, (uint)frame.Length, 0, 0);
                break;
            default:
                var header = new byte[16];
                BinaryPrimitives.WriteUInt32LittleEndian(header, 8); // VIRTIO_BLK_T_GET_ID
                _mem.Write(Buf, header);
                _mem.Write(Buf + 0x200, [0xEE]);
                Descriptor(0, Buf, 16, Next, 1);
                Descriptor(1, Buf + 0x100, 20, Write | Next, 2);
                Descriptor(2, Buf + 0x200, 1, Write, 0);
                break;
        }

        _mem.Write(Avail + 4, [0, 0]); // ring[0] = head 0
        _mem.Write(Avail + 2, [1, 0]); // avail.idx = 1
        _kick.Signal();
    }

    /// <summary>Waits for head 0 in the used ring; for Block also checks the status byte is VIRTIO_BLK_S_OK.</summary>
    public async Task<string?> WaitCompletedAsync(TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        var b = new byte[8];
        while (true)
        {
            _mem.Read(Used + 2, b.AsSpan(0, 2));
            if (BinaryPrimitives.ReadUInt16LittleEndian(b) == 1)
            {
                break;
            }

            if (DateTime.UtcNow > deadline)
            {
                return "no used element within the timeout";
            }

            await Task.Delay(2).ConfigureAwait(false);
        }

        _mem.Read(Used + 4, b);
        if (BinaryPrimitives.ReadUInt32LittleEndian(b) != 0)
        {
            return $"used id {BinaryPrimitives.ReadUInt32LittleEndian(b)}, expected 0";
        }

        if (_device == SoakDevice.Block)
        {
            _mem.Read(Buf + 0x200, b.AsSpan(0, 1));
            return b[0] == 0 ? null : $"blk status {b[0]}";
        }

        return _device == SoakDevice.Rng && BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(4)) == 0 ? "rng returned no bytes" : null;
    }

    private void Descriptor(int i, ulong addr, uint len, ushort flags, ushort next)
    {
        var d = new byte[16];
        BinaryPrimitives.WriteUInt64LittleEndian(d, addr);
        BinaryPrimitives.WriteUInt32LittleEndian(d.AsSpan(8), len);
        BinaryPrimitives.WriteUInt16LittleEndian(d.AsSpan(12), flags);
        BinaryPrimitives.WriteUInt16LittleEndian(d.AsSpan(14), next);
        _mem.Write(Desc + (16 * (ulong)i), d);
    }

    /// <summary>Closes the connection abruptly (no GET_VRING_BASE), then frees the frontend's memory and eventfds.</summary>
    public async ValueTask DisposeAsync()
    {
        await _fe.DisposeAsync().ConfigureAwait(false);
        _mem.Dispose();
        _kick.Dispose();
        _call.Dispose();
    }

    /// <summary>One healthy round trip: open, post, wait. Null when it worked, else what went wrong.</summary>
    public static async Task<string?> CheckAsync(string path, SoakDevice device, TimeSpan timeout)
    {
        try
        {
            await using var s = await OpenAsync(path, device, timeout).ConfigureAwait(false);
            s.Post();
            string? error = await s.WaitCompletedAsync(timeout).ConfigureAwait(false);
            await s.Frontend.GetVringBaseAsync(s.Queue).ConfigureAwait(false); // stop the ring as QEMU does before closing
            return error;
        }
        catch (Exception ex) when (ex is IOException or VhostUserRequestException or System.Net.Sockets.SocketException or TimeoutException or OperationCanceledException)
        {
            return ex.Message;
        }
    }
}
