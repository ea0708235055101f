using System.Buffers.Binary;
using VhostCompat.Protocol;

namespace VhostCompat.Benchmarks.Soak;

/// <summary>
/// Message-level cases from docs HOSTILE-INPUTS (a) and (b): one bad frame (or a few) on a fresh connection,
/// then a GET_FEATURES to see whether the stream is still in sync or the backend closed it.
/// </summary>
internal static class MessageCases
{
    private const uint Plain = MessageHeader.Version, NeedReply = MessageHeader.Version | MessageHeader.NeedReplyFlag;

    public static IEnumerable<SoakCase> All() =>
    [
        new("truncated-header", "message", TruncatedHeaderAsync),
        new("oversized-size", "message", OversizedSizeAsync),
        new("unknown-request", "message", UnknownRequestAsync),
        new("bad-flags", "message", BadFlagsAsync),
        new("fds-on-fdless-request", "message", FdsOnFdlessRequestAsync),
        new("undersized-payload", "message", UndersizedPayloadAsync),
        new("fd-flood", "message", FdFloodAsync),
        new("mem-table-bad-fd-kind", "message", BadFdKindAsync),
        new("mem-table-bad-regions", "message", BadRegionsAsync),
        new("vring-bad-fds", "message", BadVringFdsAsync),
        new("config-abuse", "message", ConfigAbuseAsync),
    ];

    // A1 (i): 1-11 header bytes (sometimes with an fd), then close.
    private static async Task<PeerOutcome> TruncatedHeaderAsync(CaseContext c)
    {
        using var p = await c.ConnectAsync().ConfigureAwait(false);
        byte[] frame = MessageFraming.Encode(c.Pick(1u, 5u, 8u, 24u), NeedReply, new byte[8]);
        p.SendBytes(frame.AsSpan(0, c.Random.Next(1, MessageHeader.Length)), c.Random.Next(2) == 0 ? [] : [c.Fds.EventFd()]);
        return PeerOutcome.Abandoned;
    }

    // A3: size field beyond the 4 KiB limit, sometimes with a memfd attached and a few payload bytes.
    private static async Task<PeerOutcome> OversizedSizeAsync(CaseContext c)
    {
        using var p = await c.ConnectAsync().ConfigureAwait(false);
        var frame = new byte[MessageHeader.Length + 16];
        new MessageHeader(c.Pick(1u, 5u, 25u, 0x1000u), NeedReply, c.Pick(0x1001u, 0x10000u, 0xFFFF_FFFFu)).Write(frame);
        p.SendBytes(frame, c.Random.Next(2) == 0 ? [] : [c.Fds.Memfd(4096)]);
        return await p.SyncAsync(c.Timeout).ConfigureAwait(false);
    }

    // A6: unknown, reserved, backend-only and unimplemented codes, with and without NEED_REPLY, with 0 or 3 fds.
    private static async Task<PeerOutcome> UnknownRequestAsync(CaseContext c)
    {
        using var p = await c.ConnectAsync().ConfigureAwait(false);
        int[] fds = c.Random.Next(2) == 0 ? [] : [c.Fds.EventFd(), c.Fds.EventFd(), c.Fds.EventFd()];
        var payload = new byte[c.Random.Next(0, 17)];
        c.Random.NextBytes(payload);
        p.Send(c.Pick(0u, 26u, 33u, 44u, 45u, 46u, 63u, 100u, 0x1000u, 0x7FFF_FFFFu, 0xFFFF_FFFFu), c.Pick(Plain, NeedReply), payload, fds);
        return await p.SyncAsync(c.Timeout).ConfigureAwait(false);
    }

    // A7-A9: bad version bits, the reply bit on a request, reserved flag bits.
    private static async Task<PeerOutcome> BadFlagsAsync(CaseContext c)
    {
        using var p = await c.ConnectAsync().ConfigureAwait(false);
        p.Send(c.Pick(1u, 3u, 15u), c.Pick(0u, 2u, 3u, 0x5u, 0xDu, 0x11u, 0x8000_0001u), []);
        return await p.SyncAsync(c.Timeout).ConfigureAwait(false);
    }

    // A11: fds on requests that take none.
    private static async Task<PeerOutcome> FdsOnFdlessRequestAsync(CaseContext c)
    {
        using var p = await c.ConnectAsync().ConfigureAwait(false);
        switch (c.Random.Next(4))
        {
            case 0:
                p.Send(FrontendRequest.GetFeatures, default, Enumerable.Range(0, 8).Select(_ => c.Fds.EventFd()).ToArray());
                break;
            case 1:
                p.Send(FrontendRequest.SetVringNum, new VringStatePayload(0, 64).Encode(), [c.Fds.Memfd(4096)], needReply: true);
                break;
            case 2:
                p.Send(FrontendRequest.SetOwner, default, [c.Fds.PipeReadEnd()], needReply: true);
                break;
            default:
                p.Send(FrontendRequest.GetProtocolFeatures, default, [c.Fds.Directory(), c.Fds.Socket()]);
                break;
        }

        return await p.SyncAsync(c.Timeout).ConfigureAwait(false);
    }

    // A4: payloads shorter than the request's struct.
    private static async Task<PeerOutcome> UndersizedPayloadAsync(CaseContext c)
    {
        using var p = await c.ConnectAsync().ConfigureAwait(false);
        var (request, full) = c.Pick((FrontendRequest.SetVringNum, 8), (FrontendRequest.SetFeatures, 8), (FrontendRequest.SetVringAddr, 40), (FrontendRequest.SetMemTable, 40), (FrontendRequest.SetVringBase, 8));
        p.Send(request, new byte[c.Pick(0, 4, full - 1)], default, needReply: true);
        return await p.SyncAsync(c.Timeout).ConfigureAwait(false);
    }

    // Fd flood: 16 frames in a row, each carrying 16 eventfds (the per-message maximum), on requests that take none.
    private static async Task<PeerOutcome> FdFloodAsync(CaseContext c)
    {
        using var p = await c.ConnectAsync().ConfigureAwait(false);
        int[] fds = Enumerable.Range(0, 16).Select(_ => c.Fds.EventFd()).ToArray();
        for (int i = 0; i < 16 && !p.PeerGone; i++)
        {
            p.Send(c.Pick(1u, 3u, 0x1000u), c.Pick(Plain, NeedReply), [], fds);
        }

        return await p.SyncAsync(c.Timeout).ConfigureAwait(false);
    }

    // B9: SET_MEM_TABLE whose fd is not mappable memory (a pipe, a socket, a directory, /dev/null, an eventfd).
    private static async Task<PeerOutcome> BadFdKindAsync(CaseContext c)
    {
        using var p = await c.ConnectAsync().ConfigureAwait(false);
        if (!await c.HandshakeAsync(p).ConfigureAwait(false))
        {
            return PeerOutcome.Failed;
        }

        int fd = c.Random.Next(5) switch { 0 => c.Fds.PipeReadEnd(), 1 => c.Fds.Socket(), 2 => c.Fds.Directory(), 3 => c.Fds.DevNull(), _ => c.Fds.EventFd() };
        p.Send(FrontendRequest.SetMemTable, MemoryTablePayload.Encode([new MemoryRegionPayload(0, CaseContext.RamSize, CaseContext.Uva, 0)]), [fd], needReply: true);
        return await p.SyncAsync(c.Timeout).ConfigureAwait(false);
    }

    // B1-B6, B3, B9: zero/too many regions, wrapping arithmetic, overlaps, undersized memfds, fd count mismatch;
    // half the time on top of a valid table that must survive (I7) and be released at close.
    private static async Task<PeerOutcome> BadRegionsAsync(CaseContext c)
    {
        using var p = await c.ConnectAsync().ConfigureAwait(false);
        if (!await c.HandshakeAsync(p).ConfigureAwait(false))
        {
            return PeerOutcome.Failed;
        }

        if (c.Random.Next(2) == 0)
        {
            c.SendValidMemTable(p);
        }

        const ulong uva = CaseContext.Uva, mib = CaseContext.RamSize;
        MemoryRegionPayload R(ulong gpa, ulong size, ulong u, ulong off) => new(gpa, size, u, off);
        int Mem(long size) => c.Fds.Memfd(size);
        (MemoryRegionPayload[] Regions, int[] Fds, uint? Count) v = c.Random.Next(12) switch
        {
            0 => ([], [], null),
            1 => (Enumerable.Range(0, 9).Select(i => R((ulong)i * 0x1000, 0x1000, uva + ((ulong)i * 0x1000), 0)).ToArray(), Enumerable.Range(0, 9).Select(_ => Mem(4096)).ToArray(), null),
            2 => ([R(0, mib, uva, 0)], [Mem((long)mib)], 0xFFFF_FFFFu),
            3 => ([R(0, 0, uva, 0)], [Mem(4096)], null),
            4 => ([R(0xFFFF_FFFF_FFFF_F000, 0x2000, uva, 0)], [Mem(0x2000)], null),
            5 => ([R(0, 0x2000, 0xFFFF_FFFF_FFFF_F000, 0)], [Mem(0x2000)], null),
            6 => ([R(0, 0x1000, uva, 0xFFFF_FFFF_FFFF_F000)], [Mem(0x1000)], null),
            7 => ([R(0, mib, uva, 0), R(mib / 2, mib, uva + 0x1000_0000, 0)], [Mem((long)mib), Mem((long)mib)], null),
            8 => ([R(0, mib, uva, 0), R(0x1000_0000, mib, uva + (mib / 2), 0)], [Mem((long)mib), Mem((long)mib)], null),
            9 => ([R(0, mib, uva, 0)], [Mem(4096)], null),
            10 => ([R(0, 0x1000, uva, 0x10_0000)], [Mem(0x1_0000)], null),
            _ => c.Random.Next(2) == 0 ? ([R(0, mib, uva, 0), R(0x1000_0000, mib, uva + 0x1000_0000, 0)], [Mem((long)mib)], null) : ([R(0, mib, uva, 0)], [Mem((long)mib), Mem(4096), Mem(4096)], null),
        };
        byte[] payload = MemoryTablePayload.Encode(v.Regions);
        if (v.Count is uint count)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(payload, count);
        }

        p.Send(FrontendRequest.SetMemTable, payload, v.Fds, needReply: true);
        return await p.SyncAsync(c.Timeout).ConfigureAwait(false);
    }

    // A12, A15, A16, C12: KICK/CALL/ERR with NOFD plus an fd, no fd without NOFD, 2 fds, an index out of range,
    // reserved bits, fds that are not eventfds.
    private static async Task<PeerOutcome> BadVringFdsAsync(CaseContext c)
    {
        using var p = await c.ConnectAsync().ConfigureAwait(false);
        if (!await c.HandshakeAsync(p).ConfigureAwait(false))
        {
            return PeerOutcome.Failed;
        }

        const ulong noFd = 0x100;
        var request = c.Pick(FrontendRequest.SetVringKick, FrontendRequest.SetVringCall, FrontendRequest.SetVringErr);
        var (value, fds) = c.Random.Next(7) switch
        {
            0 => (noFd, new[] { c.Fds.EventFd() }),
            1 => (0ul, Array.Empty<int>()),
            2 => (0ul, [c.Fds.EventFd(), c.Fds.EventFd()]),
            3 => ((ulong)c.QueueCount, [c.Fds.EventFd()]),
            4 => (0xFFul, [c.Fds.EventFd()]),
            5 => (1ul << 20, [c.Fds.EventFd()]),
            _ => (0ul, [c.Random.Next(3) switch { 0 => c.Fds.Directory(), 1 => c.Fds.PipeReadEnd(), _ => c.Fds.Socket() }]),
        };
        p.Send(request, U64Payload.Encode(value), fds, needReply: true);
        return await p.SyncAsync(c.Timeout).ConfigureAwait(false);
    }

    // A19: GET/SET_CONFIG with wrapping offset+size, size 0, size beyond the space, payload length != size, unknown flags.
    private static async Task<PeerOutcome> ConfigAbuseAsync(CaseContext c)
    {
        using var p = await c.ConnectAsync().ConfigureAwait(false);
        if (!await c.HandshakeAsync(p).ConfigureAwait(false))
        {
            return PeerOutcome.Failed;
        }

        var (offset, size, flags, data) = c.Pick((0xFFFF_FFF0u, 0x20u, 0u, 0x20), (0u, 0u, 0u, 0), (0u, 0xFF0u, 0u, 0xFF0), (0u, 8u, 0u, 4), (0u, 8u, 7u, 8), (0x100u, 8u, 0u, 8));
        var payload = new byte[12 + data];
        BinaryPrimitives.WriteUInt32LittleEndian(payload, offset);
        BinaryPrimitives.WriteUInt32LittleEndian(payload.AsSpan(4), size);
        BinaryPrimitives.WriteUInt32LittleEndian(payload.AsSpan(8), flags);
        p.Send(c.Pick(FrontendRequest.GetConfig, FrontendRequest.SetConfig), payload, default, needReply: true);
        return await p.SyncAsync(c.Timeout).ConfigureAwait(false);
    }
}
