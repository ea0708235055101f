using System.Buffers.Binary;
using VhostCompat.Benchmarks.Soak;
using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.Benchmarks.Shield;

/// <summary>One hostile case: its name, the HOSTILE-INPUTS ids it covers, and the code that performs it once on fresh connections.</summary>
/// <param name="Repeat">How many times one run performs it (the leak check compares the process before and after the runs).</param>
internal sealed record ShieldCase(string Name, string Ids, string What, Func<ShieldContext, Task<string>> Run, int Repeat = 1);

/// <summary>
/// What a case gets: the socket, a bag for the fds it creates, and helpers for the set-up prefixes (negotiation,
/// a valid memory table over a real memfd, a configured ring) and for reading what the backend answered.
/// </summary>
internal sealed class ShieldContext(string socketPath, bool net, FdBag fds, TimeSpan timeout)
{
    /// <summary>The frontend address guest RAM claims to be at (the backend maps the memfd wherever it likes).</summary>
    public const ulong Uva = 0x7f00_0000_0000;

    public const ulong RamSize = 1 << 20;

    public const uint NeedReply = MessageHeader.Version | MessageHeader.NeedReplyFlag;

    public string SocketPath => socketPath;

    public bool Net => net;

    /// <summary>Rings of the device (DPDK with queues=1: 2; qemu-storage-daemon default: 1).</summary>
    public int QueueCount => net ? 2 : 1;

    public FdBag Fds => fds;

    public TimeSpan Timeout => timeout;

    /// <summary>The protocol features the last <see cref="HandshakeAsync"/> acked.</summary>
    public ulong AckedProtocol { get; private set; }

    public Task<RawPeer> ConnectAsync() => ConnectAsync(socketPath, timeout);

    /// <summary>
    /// Connects, retrying while the listener refuses or is absent: the proxy re-creates its listening socket for every
    /// frontend session (after it has reconnected to and re-checked the backend), so there is a short window without one.
    /// </summary>
    public static async Task<RawPeer> ConnectAsync(string path, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            try
            {
                return await RawPeer.ConnectAsync(path, timeout).ConfigureAwait(false);
            }
            catch (System.Net.Sockets.SocketException ex) when (ex.SocketErrorCode is System.Net.Sockets.SocketError.ConnectionRefused or System.Net.Sockets.SocketError.AddressNotAvailable
                && DateTime.UtcNow < deadline)
            {
                await Task.Delay(5).ConfigureAwait(false);
            }
        }
    }

    /// <summary>As <see cref="ConnectAsync(string, TimeSpan)"/>, for the SDK frontend.</summary>
    public static async Task<System.Net.Sockets.Socket> ConnectSocketAsync(string path, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            try
            {
                return await RawPeer.ConnectSocketAsync(path, timeout).ConfigureAwait(false);
            }
            catch (System.Net.Sockets.SocketException ex) when (ex.SocketErrorCode is System.Net.Sockets.SocketError.ConnectionRefused or System.Net.Sockets.SocketError.AddressNotAvailable
                && DateTime.UtcNow < deadline)
            {
                await Task.Delay(5).ConfigureAwait(false);
            }
        }
    }

    /// <summary>
    /// GET_FEATURES, GET/SET_PROTOCOL_FEATURES (REPLY_ACK, MQ, CONFIG and <paramref name="extra"/>, each where offered),
    /// SET_OWNER, SET_FEATURES (VERSION_1 and PROTOCOL_FEATURES: a split ring). False if the backend did not answer.
    /// </summary>
    public async Task<bool> HandshakeAsync(RawPeer p, VhostUserProtocolFeatures extra = VhostUserProtocolFeatures.None)
    {
        ulong? offered = await p.RequestU64Async(FrontendRequest.GetFeatures, default, false, timeout).ConfigureAwait(false);
        if (offered is null)
        {
            return false;
        }

        AckedProtocol = 0;
        if ((offered.Value & VirtioFeatureBits.ProtocolFeatures) != 0)
        {
            ulong? protocol = await p.RequestU64Async(FrontendRequest.GetProtocolFeatures, default, false, timeout).ConfigureAwait(false);
            if (protocol is null)
            {
                return false;
            }

            ulong wanted = (ulong)(VhostUserProtocolFeatures.ReplyAck | VhostUserProtocolFeatures.Mq | VhostUserProtocolFeatures.Config | extra);
            AckedProtocol = protocol.Value & wanted;
            p.Send(FrontendRequest.SetProtocolFeatures, U64Payload.Encode(AckedProtocol));
        }

        p.Send(FrontendRequest.SetOwner);
        return p.Send(FrontendRequest.SetFeatures, U64Payload.Encode(offered.Value & (VirtioFeatureBits.Version1 | VirtioFeatureBits.ProtocolFeatures)));
    }

    public bool Acked(VhostUserProtocolFeatures f) => (AckedProtocol & (ulong)f) != 0;

    /// <summary>Flags for a request that should be acked: NEED_REPLY when REPLY_ACK was negotiated.</summary>
    public uint AckFlags => Acked(VhostUserProtocolFeatures.ReplyAck) ? NeedReply : MessageHeader.Version;

    /// <summary>A valid one-region SET_MEM_TABLE over a fresh 1 MiB memfd, and its ack.</summary>
    public async Task<bool> ValidMemTableAsync(RawPeer p)
    {
        p.Send((uint)FrontendRequest.SetMemTable, AckFlags, MemoryTablePayload.Encode([new MemoryRegionPayload(0, RamSize, Uva, 0)]), [fds.Memfd((long)RamSize)]);
        return AckFlags == MessageHeader.Version || await AckAsync(p, FrontendRequest.SetMemTable).ConfigureAwait(false) == 0;
    }

    /// <summary>SET_VRING_NUM 16, SET_VRING_BASE 0, SET_VRING_ADDR (desc/avail/used at the given frontend addresses) on ring 0.</summary>
    public void ConfigureRing(RawPeer p, ulong desc, ulong avail, ulong used, uint num = 16)
    {
        p.Send(FrontendRequest.SetVringNum, new VringStatePayload(0, num).Encode());
        p.Send(FrontendRequest.SetVringBase, new VringStatePayload(0, 0).Encode());
        p.Send(FrontendRequest.SetVringAddr, new VringAddressPayload(0, 0, desc, used, avail, 0).Encode());
    }

    /// <summary>Kick and call eventfds on ring 0, enable it, kick once (the backend now looks at the ring, if it ever will).</summary>
    public void StartRing(RawPeer p)
    {
        int kick = fds.EventFd();
        p.Send(FrontendRequest.SetVringCall, U64Payload.Encode(0), [fds.EventFd()]);
        p.Send(FrontendRequest.SetVringKick, U64Payload.Encode(0), [kick]);
        if (Acked(VhostUserProtocolFeatures.ReplyAck) || AckedProtocol != 0)
        {
            p.Send(FrontendRequest.SetVringEnable, new VringStatePayload(0, 1).Encode());
        }

        Signal(kick);
    }

    public static void Signal(int eventFd) => _ = Interop.Libc.EventFdSignal(eventFd);

    /// <summary>Reads frames until the ack of <paramref name="request"/> (its u64), EOF or the timeout (null for both).</summary>
    public async Task<ulong?> AckAsync(RawPeer p, FrontendRequest request)
    {
        var deadline = DateTime.UtcNow + timeout;
        try
        {
            while (DateTime.UtcNow < deadline)
            {
                var f = await p.ReceiveAsync(deadline - DateTime.UtcNow).ConfigureAwait(false);
                if (f is null)
                {
                    return null;
                }

                if (f.Value.Header.Request == (uint)request && f.Value.Payload.Length == 8)
                {
                    return BinaryPrimitives.ReadUInt64LittleEndian(f.Value.Payload);
                }
            }
        }
        catch (TimeoutException)
        {
        }

        return null;
    }

    /// <summary>
    /// After the hostile message: sends a probe request (GET_FEATURES, or GET_PROTOCOL_FEATURES when the hostile request
    /// was GET_FEATURES) and reads until its reply, EOF or the timeout, noting any reply to the hostile request on the way.
    /// Returns "refused" (ack ≠ 0), "accepted" (ack 0), "answered" (a reply of its own), "closed", "no-ack" (the hostile
    /// request wanted a reply and got none, the probe was answered), "ignored" (no reply expected, probe answered) or "hung".
    /// </summary>
    public async Task<string> ObserveAsync(RawPeer p, uint hostile, bool wantsReply, bool ownReply = false)
    {
        var probe = hostile == (uint)FrontendRequest.GetFeatures ? FrontendRequest.GetProtocolFeatures : FrontendRequest.GetFeatures;
        int hostileReplies = 0;
        ulong? ack = null;
        bool sent = p.Send(probe);
        var deadline = DateTime.UtcNow + timeout;
        try
        {
            while (true)
            {
                var left = deadline - DateTime.UtcNow;
                if (left <= TimeSpan.Zero)
                {
                    return "hung";
                }

                var f = await p.ReceiveAsync(left).ConfigureAwait(false);
                if (f is null)
                {
                    return hostileReplies > 0 ? Word(ack) + "+closed" : "closed";
                }

                uint code = f.Value.Header.Request;
                if (code == (uint)probe)
                {
                    return hostileReplies > 1 ? $"{hostileReplies} replies" : hostileReplies == 1 ? Word(ack) : wantsReply ? "no-ack" : "ignored";
                }

                if (code == hostile)
                {
                    hostileReplies++;
                    ack = !ownReply && f.Value.Payload.Length == 8 ? BinaryPrimitives.ReadUInt64LittleEndian(f.Value.Payload) : null;
                }
            }
        }
        catch (TimeoutException)
        {
            return sent ? "hung" : "closed";
        }
    }

    private static string Word(ulong? ack) => ack switch { null => "answered", 0 => "accepted", _ => "refused" };
}
