using VhostCompat.Frontend;
using VhostCompat.Interop;
using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.Benchmarks.Soak;

/// <summary>
/// Session-level cases from HOSTILE-INPUTS (c), (d), (e) and (f): guest memory mapped and rings set up (well
/// or badly), then an abrupt end: the backend has to release everything the session held.
/// </summary>
internal static class SessionCases
{
    public static IEnumerable<SoakCase> All() =>
    [
        new("connect-close", "session", ConnectCloseAsync),
        new("ring-outside-memory", "session", BadRingAsync),
        new("abrupt-close-running", "session", AbruptCloseRunningAsync),
        new("close-mid-mem-table", "session", CloseMidMemTableAsync),
        new("mem-table-replaced", "session", MemTableReplacedAsync),
        new("inflight-fd", "session", InflightAsync),
        new("healthy-round-trip", "session", HealthyAsync),
    ];

    private static async Task<PeerOutcome> ConnectCloseAsync(CaseContext c)
    {
        using var p = await c.ConnectAsync().ConfigureAwait(false);
        return PeerOutcome.Abandoned;
    }

    // C/D: a valid table, then a ring whose size or addresses are bad (outside memory, wrapping, misaligned), or whose
    // addresses are fine over guest RAM full of random bytes (heads, next, lengths and avail.idx all garbage); kicked.
    private static async Task<PeerOutcome> BadRingAsync(CaseContext c)
    {
        using var p = await c.ConnectAsync().ConfigureAwait(false);
        if (!await c.HandshakeAsync(p).ConfigureAwait(false))
        {
            return PeerOutcome.Failed;
        }

        bool garbage = c.Random.Next(2) == 0;
        var contents = new byte[garbage ? 0x4000 : 0];
        c.Random.NextBytes(contents);
        c.SendValidMemTable(p, contents);
        const ulong u = CaseContext.Uva;
        uint index = (uint)(c.Random.Next(8) == 0 ? c.Pick(c.QueueCount, 0xFF) : c.Random.Next(c.QueueCount));
        uint num = garbage ? 16u : c.Pick(16u, 256u, 0u, 3u, 0x8001u, 32768u);
        var (desc, used, avail) = garbage ? (u, u + 0x2000, u + 0x1000) : c.Random.Next(5) switch
        {
            0 => (u + CaseContext.RamSize - 8, u + 0x2000, u + 0x1000),
            1 => (0xFFFF_FFFF_FFFF_F000ul, u + 0x2000, u + 0x1000),
            2 => (u, u + CaseContext.RamSize - 2, u + 0x1000),
            3 => (u, u + 0x2001, u + 0x1000),
            _ => (0ul, 0ul, 0ul),
        };
        p.Send(FrontendRequest.SetVringNum, new VringStatePayload(index, num).Encode(), default, needReply: true);
        p.Send(FrontendRequest.SetVringBase, new VringStatePayload(index, c.Pick(0u, 0xFFFFu, (uint)c.Random.Next())).Encode(), default, needReply: true);
        p.Send(FrontendRequest.SetVringAddr, new VringAddressPayload(index, 0, desc, used, avail, 0).Encode(), default, needReply: true);
        int kick = c.Fds.EventFd();
        p.Send(FrontendRequest.SetVringCall, U64Payload.Encode(index), [c.Fds.EventFd()], needReply: true);
        p.Send(FrontendRequest.SetVringErr, U64Payload.Encode(index), [c.Fds.EventFd()], needReply: true);
        p.Send(FrontendRequest.SetVringKick, U64Payload.Encode(index), [kick], needReply: true);
        p.Send(FrontendRequest.SetVringEnable, new VringStatePayload(index, 1).Encode(), default, needReply: true);
        for (int i = 0; i < 3; i++)
        {
            Libc.EventFdSignal(kick);
        }

        if (c.Random.Next(2) == 0)
        {
            p.Send(FrontendRequest.GetVringBase, new VringStatePayload(index, 0).Encode());
        }

        return await p.SyncAsync(c.Timeout).ConfigureAwait(false);
    }

    // E2: a valid session with memfd RAM and eventfds, one request posted and kicked, then the socket closed at once
    // (half the time without waiting for the completion, so the close races the worker).
    private static async Task<PeerOutcome> AbruptCloseRunningAsync(CaseContext c)
    {
        await using var s = await HealthySession.OpenAsync(c.SocketPath, c.Device, c.Timeout).ConfigureAwait(false);
        s.Post();
        if (c.Random.Next(2) == 0 && await s.WaitCompletedAsync(c.Timeout).ConfigureAwait(false) is not null)
        {
            return PeerOutcome.Failed;
        }

        return PeerOutcome.Abandoned;
    }

    // E1: SET_MEM_TABLE header and fds sent, the connection closed partway through the payload (sometimes over a valid table).
    private static async Task<PeerOutcome> CloseMidMemTableAsync(CaseContext c)
    {
        using var p = await c.ConnectAsync().ConfigureAwait(false);
        if (!await c.HandshakeAsync(p).ConfigureAwait(false))
        {
            return PeerOutcome.Failed;
        }

        if (c.Random.Next(2) == 0)
        {
            c.SendValidMemTable(p);
            if (await p.SyncAsync(c.Timeout).ConfigureAwait(false) != PeerOutcome.Synced)
            {
                return PeerOutcome.Failed;
            }
        }

        const ulong mib = CaseContext.RamSize;
        byte[] frame = MessageFraming.Encode((uint)FrontendRequest.SetMemTable, MessageHeader.Version | MessageHeader.NeedReplyFlag,
            MemoryTablePayload.Encode([new MemoryRegionPayload(0, mib, CaseContext.Uva, 0), new MemoryRegionPayload(mib, mib, CaseContext.Uva + mib, 0)]));
        p.SendBytes(frame.AsSpan(0, c.Random.Next(MessageHeader.Length, frame.Length)), [c.Fds.Memfd((long)mib), c.Fds.Memfd((long)mib)]);
        return PeerOutcome.Abandoned;
    }

    // F2: the memory table replaced several times with fresh memfds (each old mapping must go), then closed.
    private static async Task<PeerOutcome> MemTableReplacedAsync(CaseContext c)
    {
        using var p = await c.ConnectAsync().ConfigureAwait(false);
        if (!await c.HandshakeAsync(p).ConfigureAwait(false))
        {
            return PeerOutcome.Failed;
        }

        for (int i = c.Random.Next(2, 6); i > 0; i--)
        {
            c.SendValidMemTable(p);
        }

        return await p.SyncAsync(c.Timeout).ConfigureAwait(false);
    }

    // F3: GET_INFLIGHT_FD (where INFLIGHT_SHMFD is offered: Block), its memfd handed back with SET_INFLIGHT_FD, then closed.
    private static async Task<PeerOutcome> InflightAsync(CaseContext c)
    {
        await using var fe = VhostUserFrontend.FromConnectedSocket(await RawPeer.ConnectSocketAsync(c.SocketPath, c.Timeout).ConfigureAwait(false), c.Timeout);
        await fe.NegotiateAsync(ulong.MaxValue & ~VirtioFeatureBits.RingPacked, VhostUserProtocolFeatures.ReplyAck | VhostUserProtocolFeatures.InflightShmfd).ConfigureAwait(false);
        if ((fe.AckedProtocolFeatures & VhostUserProtocolFeatures.InflightShmfd) == 0)
        {
            return PeerOutcome.Synced;
        }

        using var inflight = await fe.GetInflightFdAsync(c.QueueCount, c.Pick(16, 256, 1024)).ConfigureAwait(false);
        if (inflight is not null && c.Random.Next(2) == 0)
        {
            await fe.SetInflightFdAsync(inflight).ConfigureAwait(false);
        }

        return PeerOutcome.Synced;
    }

    private static async Task<PeerOutcome> HealthyAsync(CaseContext c) =>
        await HealthySession.CheckAsync(c.SocketPath, c.Device, c.Timeout).ConfigureAwait(false) is null ? PeerOutcome.Synced : PeerOutcome.Failed;
}
