using System.Buffers.Binary;
using VhostCompat.Protocol;

namespace VhostCompat.Benchmarks.Shield;

/// <summary>
/// The message-level cases of HOSTILE-INPUTS sections (a), (b), (c), (e) and (f), each one fixed vector (no random
/// source: every run of a case sends the same bytes), on a fresh connection after the set-up prefix it needs.
/// Each returns what the backend answered (see <see cref="ShieldContext.ObserveAsync"/>).
/// </summary>
internal static class ShieldCases
{
    private const uint V = MessageHeader.Version;
    private const ulong Uva = ShieldContext.Uva, Mib = ShieldContext.RamSize;

    private enum Setup
    {
        None,
        Handshake,
        Memory,
    }

    public static IReadOnlyList<ShieldCase> All { get; } =
    [
        new("a1-truncated-header-close", "A1 i", "7 header bytes with an eventfd, then close", TruncatedCloseAsync, Repeat: 3),
        new("a1-stalled-header", "A1 ii", "7 header bytes, then silence: is the connection closed within 8 s?", StalledHeaderAsync),
        new("a3-size-64k-with-memfd", "A3", "SET_MEM_TABLE header with size 0x10000 and a memfd, 16 bytes of it", c => OversizeAsync(c, 5, 0x10000, true), Repeat: 3),
        new("a3-size-ffffffff", "A3", "GET_FEATURES header with size 0xFFFFFFFF", c => OversizeAsync(c, 1, 0xFFFF_FFFF, false), Repeat: 3),
        new("a4-short-set-vring-num", "A4", "SET_VRING_NUM with a 4-byte payload, NEED_REPLY", c => SendAsync(c, Setup.Handshake, FrontendRequest.SetVringNum, new byte[4]), Repeat: 3),
        new("a4-short-set-mem-table", "A4", "SET_MEM_TABLE with a 4-byte payload and a memfd", c => SendAsync(c, Setup.Handshake, FrontendRequest.SetMemTable, new byte[4], c.Fds.Memfd(4096)), Repeat: 3),
        new("a5-trailing-bytes", "A5", "SET_VRING_NUM with 8 trailing bytes after its 8", c => SendAsync(c, Setup.Handshake, FrontendRequest.SetVringNum, [.. new VringStatePayload(0, 64).Encode(), .. new byte[8]]), Repeat: 3),
        new("a6-unknown-request-3-fds", "A6", "request 0x1000, NEED_REPLY, 3 eventfds", c => SendAsync(c, Setup.Handshake, (FrontendRequest)0x1000, new byte[8], c.Fds.EventFd(), c.Fds.EventFd(), c.Fds.EventFd()), Repeat: 3),
        new("a6-request-0", "A6", "request 0 (reserved), NEED_REPLY", c => SendAsync(c, Setup.Handshake, 0, new byte[8]), Repeat: 3),
        new("a7-version-2", "A7", "SET_OWNER with version bits 2", c => RawFlagsAsync(c, FrontendRequest.SetOwner, 0x2), Repeat: 3),
        new("a8-reply-bit", "A8", "SET_OWNER with the reply bit (flags 0x5)", c => RawFlagsAsync(c, FrontendRequest.SetOwner, 0x5), Repeat: 3),
        new("a9-reserved-flags", "A9", "SET_OWNER with flags 0x80000001", c => RawFlagsAsync(c, FrontendRequest.SetOwner, 0x8000_0001), Repeat: 3),
        new("a10-need-reply-get-features", "A10", "GET_FEATURES with NEED_REPLY before negotiation: exactly one reply?", NeedReplyGetAsync, Repeat: 3),
        new("a11-8-fds-on-get-features", "A11", "GET_FEATURES carrying 8 eventfds", EightFdsAsync, Repeat: 3),
        new("a12-kick-two-fds", "A12", "SET_VRING_KICK ring 0 with 2 eventfds", c => SendAsync(c, Setup.Handshake, FrontendRequest.SetVringKick, U64Payload.Encode(0), c.Fds.EventFd(), c.Fds.EventFd()), Repeat: 3),
        new("a15-vring-num-index-255", "A15", "SET_VRING_NUM index 255, num 64", c => SendAsync(c, Setup.Handshake, FrontendRequest.SetVringNum, new VringStatePayload(255, 64).Encode()), Repeat: 3),
        new("a15-call-index-255", "A15", "SET_VRING_CALL index 255 with an eventfd", c => SendAsync(c, Setup.Handshake, FrontendRequest.SetVringCall, U64Payload.Encode(0xFF), c.Fds.EventFd()), Repeat: 3),
        new("a16-kick-reserved-bits", "A16", "SET_VRING_KICK ring 0 with bit 20 set, an eventfd", c => SendAsync(c, Setup.Handshake, FrontendRequest.SetVringKick, U64Payload.Encode(1UL << 20), c.Fds.EventFd()), Repeat: 3),
        new("a17-vring-enable-2", "A17", "SET_VRING_ENABLE ring 0 num 2", c => SendAsync(c, Setup.Handshake, FrontendRequest.SetVringEnable, new VringStatePayload(0, 2).Encode()), Repeat: 3),
        new("a18-inflight-not-negotiated", "A18", "GET_INFLIGHT_FD (1 queue of 128) with INFLIGHT_SHMFD not acked", c => SendAsync(c, Setup.Handshake, FrontendRequest.GetInflightFd, new InflightDescriptionPayload(0, 0, 1, 128).Encode()), Repeat: 3),
        new("a19-get-config-wrap", "A19", "GET_CONFIG offset 0xFFFFFFF0 size 0x20 (CONFIG acked where offered)", c => SendAsync(c, Setup.Handshake, FrontendRequest.GetConfig, new DeviceConfigHeader(0xFFFF_FFF0, 0x20, 0).Encode(new byte[0x20])), Repeat: 3),
        new("a21-set-status-0x1ff", "A21", "SET_STATUS 0x1FF (STATUS acked where offered)", SetStatusAsync, Repeat: 3),
        new("b1-zero-regions", "B1", "valid table, then SET_MEM_TABLE with 0 regions", c => SendAsync(c, Setup.Memory, FrontendRequest.SetMemTable, MemoryTablePayload.Encode([])), Repeat: 3),
        new("b2-nregions-ffffffff", "B2", "SET_MEM_TABLE nregions 0xFFFFFFFF, one region and memfd", c => SendAsync(c, Setup.Handshake, FrontendRequest.SetMemTable, Count(MemoryTablePayload.Encode([R(0, Mib, Uva, 0)]), 0xFFFF_FFFF), c.Fds.Memfd((long)Mib)), Repeat: 3),
        new("b3-two-regions-one-fd", "B3", "SET_MEM_TABLE with 2 regions and 1 memfd", c => SendAsync(c, Setup.Handshake, FrontendRequest.SetMemTable, MemoryTablePayload.Encode([R(0, Mib, Uva, 0), R(0x1000_0000, Mib, Uva + 0x1000_0000, 0)]), c.Fds.Memfd((long)Mib)), Repeat: 3),
        new("b4-zero-size-region", "B4", "SET_MEM_TABLE with a region of size 0", c => SendAsync(c, Setup.Handshake, FrontendRequest.SetMemTable, MemoryTablePayload.Encode([R(0, 0, Uva, 0)]), c.Fds.Memfd(4096)), Repeat: 3),
        new("b5-gpa-wraps", "B5", "region gpa 0xFFFFFFFFFFFFF000 size 0x2000", c => SendAsync(c, Setup.Handshake, FrontendRequest.SetMemTable, MemoryTablePayload.Encode([R(0xFFFF_FFFF_FFFF_F000, 0x2000, Uva, 0)]), c.Fds.Memfd(0x2000)), Repeat: 3),
        new("b5-mmap-offset-wraps", "B5", "region mmap_offset 0xFFFFFFFFFFFFF000 size 0x2000", c => SendAsync(c, Setup.Handshake, FrontendRequest.SetMemTable, MemoryTablePayload.Encode([R(0, 0x2000, Uva, 0xFFFF_FFFF_FFFF_F000)]), c.Fds.Memfd(0x2000)), Repeat: 3),
        new("b6-overlapping-gpa", "B6", "two regions whose guest ranges overlap", c => SendAsync(c, Setup.Handshake, FrontendRequest.SetMemTable, MemoryTablePayload.Encode([R(0, Mib, Uva, 0), R(Mib / 2, Mib, Uva + 0x1000_0000, 0)]), c.Fds.Memfd((long)Mib), c.Fds.Memfd((long)Mib)), Repeat: 3),
        new("b6-overlapping-user-addr", "B6", "distinct guest ranges whose frontend (user) addresses overlap", c => SendAsync(c, Setup.Handshake, FrontendRequest.SetMemTable, MemoryTablePayload.Encode([R(0, Mib, Uva, 0), R(0x1000_0000, Mib, Uva + (Mib / 2), 0)]), c.Fds.Memfd((long)Mib), c.Fds.Memfd((long)Mib)), Repeat: 3),
        new("b9-pipe-as-memory", "B9", "SET_MEM_TABLE whose fd is a pipe", c => SendAsync(c, Setup.Handshake, FrontendRequest.SetMemTable, MemoryTablePayload.Encode([R(0, Mib, Uva, 0)]), c.Fds.PipeReadEnd()), Repeat: 3),
        new("b9-short-memfd-ring", "B9 + C4", "a 1 MiB region over a 4 KiB memfd, then a ring at 512 KiB (past the file's end) and a kick", ShortMemfdRingAsync, Repeat: 3),
        new("b11-region-2^46", "B11", "one region of 2^46 bytes over a 4 KiB memfd", c => SendAsync(c, Setup.Handshake, FrontendRequest.SetMemTable, MemoryTablePayload.Encode([R(0, 1UL << 46, Uva, 0)]), c.Fds.Memfd(4096)), Repeat: 3),
        new("c2-split-size-3", "C2", "split ring: SET_VRING_NUM 3", c => SendAsync(c, Setup.Handshake, FrontendRequest.SetVringNum, new VringStatePayload(0, 3).Encode()), Repeat: 3),
        new("c3-size-0x8001", "C3", "SET_VRING_NUM 32769", c => SendAsync(c, Setup.Handshake, FrontendRequest.SetVringNum, new VringStatePayload(0, 0x8001).Encode()), Repeat: 3),
        new("c4-ring-outside-memory", "C4", "valid 1 MiB table, a ring at 2 MiB (outside it), enable, kick", c => RingAsync(c, Uva + (2 * Mib), Uva + (2 * Mib) + 0x1000, Uva + (2 * Mib) + 0x2000), Repeat: 3),
        new("c4-used-ring-past-end", "C4", "valid 1 MiB table, the used ring's last bytes past its end, enable, kick", c => RingAsync(c, Uva, Uva + 0x1000, Uva + Mib - 0x40), Repeat: 3),
        new("c6-misaligned-desc", "C6", "valid table, descriptor table at +8, enable, kick", c => RingAsync(c, Uva + 8, Uva + 0x1000, Uva + 0x2000), Repeat: 3),
        new("c7-unknown-addr-flags", "C7", "valid table, SET_VRING_ADDR with flags 0xFE", c => SendAsync(c, Setup.Memory, FrontendRequest.SetVringAddr, new VringAddressPayload(0, 0xFE, Uva, Uva + 0x2000, Uva + 0x1000, 0).Encode()), Repeat: 3),
        new("c12-kick-is-directory", "C12", "SET_VRING_KICK ring 0 whose fd is a directory", c => SendAsync(c, Setup.Memory, FrontendRequest.SetVringKick, U64Payload.Encode(0), c.Fds.Directory()), Repeat: 3),
        new("c13-kick-replaced-200", "C13", "valid table and ring, then 200 SET_VRING_KICK with fresh eventfds", KickReplacedAsync),
        new("e1-close-mid-mem-table", "E1", "SET_MEM_TABLE header, 2 memfds and half the payload, then close", CloseMidTableAsync, Repeat: 3),
        new("f2-mem-table-replaced-50", "F2", "50 valid SET_MEM_TABLEs in a row, each over a fresh memfd", MemTableReplacedAsync),
        new("f4-inflight-4096-queues", "F4", "GET_INFLIGHT_FD for 4096 queues of 256 (INFLIGHT_SHMFD acked where offered)", InflightHugeAsync),
    ];

    private static MemoryRegionPayload R(ulong gpa, ulong size, ulong uva, ulong offset) => new(gpa, size, uva, offset);

    private static byte[] Count(byte[] table, uint count)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(table, count);
        return table;
    }

    /// <summary>Connects, runs the prefix, sends one request (NEED_REPLY where REPLY_ACK was acked) and observes the answer.</summary>
    private static async Task<string> SendAsync(ShieldContext c, Setup setup, FrontendRequest request, byte[] payload, params int[] fds)
    {
        using var p = await c.ConnectAsync().ConfigureAwait(false);
        if (await PrefixAsync(c, p, setup).ConfigureAwait(false) is { } failed)
        {
            return failed;
        }

        bool ownReply = PayloadRules.HasOwnReply(request);
        uint flags = ownReply ? V : c.AckFlags;
        p.Send((uint)request, flags, payload, fds);
        return await c.ObserveAsync(p, (uint)request, ownReply || flags != V, ownReply).ConfigureAwait(false);
    }

    private static async Task<string?> PrefixAsync(ShieldContext c, Soak.RawPeer p, Setup setup, VhostUserProtocolFeatures extra = VhostUserProtocolFeatures.None)
    {
        if (setup >= Setup.Handshake && !await c.HandshakeAsync(p, extra).ConfigureAwait(false))
        {
            return "setup-failed: handshake";
        }

        if (setup >= Setup.Memory && !await c.ValidMemTableAsync(p).ConfigureAwait(false))
        {
            return "setup-failed: valid memory table refused";
        }

        return null;
    }

    private static async Task<string> TruncatedCloseAsync(ShieldContext c)
    {
        using var p = await c.ConnectAsync().ConfigureAwait(false);
        p.SendBytes(MessageFraming.Encode(1, V, []).AsSpan(0, 7), [c.Fds.EventFd()]);
        return "abandoned";
    }

    private static async Task<string> StalledHeaderAsync(ShieldContext c)
    {
        using var p = await c.ConnectAsync().ConfigureAwait(false);
        p.SendBytes(MessageFraming.Encode(1, V, []).AsSpan(0, 7));
        var started = DateTime.UtcNow;
        try
        {
            var f = await p.ReceiveAsync(TimeSpan.FromSeconds(8)).ConfigureAwait(false);
            return f is null ? $"closed after {(DateTime.UtcNow - started).TotalSeconds:0.0} s" : "answered a partial header";
        }
        catch (TimeoutException)
        {
            return "hung: still open after 8 s";
        }
    }

    private static async Task<string> OversizeAsync(ShieldContext c, uint request, uint size, bool memfd)
    {
        using var p = await c.ConnectAsync().ConfigureAwait(false);
        var frame = new byte[MessageHeader.Length + 16];
        new MessageHeader(request, ShieldContext.NeedReply, size).Write(frame);
        p.SendBytes(frame, memfd ? [c.Fds.Memfd(4096)] : []);
        // The backend may be reading `size` payload bytes: the probe only completes the stream for it if it never closes.
        return await c.ObserveAsync(p, request, true, request == 1).ConfigureAwait(false);
    }

    private static async Task<string> RawFlagsAsync(ShieldContext c, FrontendRequest request, uint flags)
    {
        using var p = await c.ConnectAsync().ConfigureAwait(false);
        p.Send((uint)request, flags, []);
        return await c.ObserveAsync(p, (uint)request, (flags & MessageHeader.NeedReplyFlag) != 0).ConfigureAwait(false);
    }

    private static async Task<string> NeedReplyGetAsync(ShieldContext c)
    {
        using var p = await c.ConnectAsync().ConfigureAwait(false);
        p.Send((uint)FrontendRequest.GetFeatures, ShieldContext.NeedReply, []);
        return await c.ObserveAsync(p, (uint)FrontendRequest.GetFeatures, true, ownReply: true).ConfigureAwait(false);
    }

    private static async Task<string> EightFdsAsync(ShieldContext c)
    {
        using var p = await c.ConnectAsync().ConfigureAwait(false);
        p.Send((uint)FrontendRequest.GetFeatures, V, [], Enumerable.Range(0, 8).Select(_ => c.Fds.EventFd()).ToArray());
        return await c.ObserveAsync(p, (uint)FrontendRequest.GetFeatures, true, ownReply: true).ConfigureAwait(false);
    }

    private static async Task<string> SetStatusAsync(ShieldContext c)
    {
        using var p = await c.ConnectAsync().ConfigureAwait(false);
        if (await PrefixAsync(c, p, Setup.Handshake, VhostUserProtocolFeatures.Status).ConfigureAwait(false) is { } failed)
        {
            return failed;
        }

        p.Send((uint)FrontendRequest.SetStatus, c.AckFlags, U64Payload.Encode(0x1FF));
        return await c.ObserveAsync(p, (uint)FrontendRequest.SetStatus, c.AckFlags != V).ConfigureAwait(false);
    }

    // The memfd is 4 KiB, the region claims 1 MiB: a backend that maps without fstat gets SIGBUS when it touches the ring.
    private static async Task<string> ShortMemfdRingAsync(ShieldContext c)
    {
        using var p = await c.ConnectAsync().ConfigureAwait(false);
        if (await PrefixAsync(c, p, Setup.Handshake).ConfigureAwait(false) is { } failed)
        {
            return failed;
        }

        p.Send((uint)FrontendRequest.SetMemTable, c.AckFlags, MemoryTablePayload.Encode([R(0, Mib, Uva, 0)]), [c.Fds.Memfd(4096)]);
        ulong? ack = c.AckFlags == V ? 0 : await c.AckAsync(p, FrontendRequest.SetMemTable).ConfigureAwait(false);
        if (ack != 0)
        {
            return ack is null ? "closed (table)" : "refused (table)";
        }

        const ulong at = Uva + (Mib / 2);
        c.ConfigureRing(p, at, at + 0x1000, at + 0x2000);
        c.StartRing(p);
        return "table accepted; ring " + await c.ObserveAsync(p, (uint)FrontendRequest.SetVringAddr, false).ConfigureAwait(false);
    }

    private static async Task<string> RingAsync(ShieldContext c, ulong desc, ulong avail, ulong used)
    {
        using var p = await c.ConnectAsync().ConfigureAwait(false);
        if (await PrefixAsync(c, p, Setup.Memory).ConfigureAwait(false) is { } failed)
        {
            return failed;
        }

        p.Send(FrontendRequest.SetVringNum, new VringStatePayload(0, 16).Encode());
        p.Send(FrontendRequest.SetVringBase, new VringStatePayload(0, 0).Encode());
        p.Send((uint)FrontendRequest.SetVringAddr, c.AckFlags, new VringAddressPayload(0, 0, desc, used, avail, 0).Encode());
        ulong? ack = c.AckFlags == V ? 0 : await c.AckAsync(p, FrontendRequest.SetVringAddr).ConfigureAwait(false);
        if (ack is null)
        {
            return "closed";
        }

        c.StartRing(p);
        return (ack == 0 ? "accepted" : "refused") + "; then " + await c.ObserveAsync(p, (uint)FrontendRequest.SetVringKick, false).ConfigureAwait(false);
    }

    private static async Task<string> KickReplacedAsync(ShieldContext c)
    {
        using var p = await c.ConnectAsync().ConfigureAwait(false);
        if (await PrefixAsync(c, p, Setup.Memory).ConfigureAwait(false) is { } failed)
        {
            return failed;
        }

        c.ConfigureRing(p, Uva, Uva + 0x1000, Uva + 0x2000);
        c.StartRing(p);
        for (int i = 0; i < 200 && !p.PeerGone; i++)
        {
            using var fd = Interop.FileDescriptor.CreateEventFd();
            p.Send(FrontendRequest.SetVringKick, U64Payload.Encode(0), [fd.Value]);
        }

        return await c.ObserveAsync(p, (uint)FrontendRequest.SetVringKick, false).ConfigureAwait(false);
    }

    private static async Task<string> CloseMidTableAsync(ShieldContext c)
    {
        using var p = await c.ConnectAsync().ConfigureAwait(false);
        if (await PrefixAsync(c, p, Setup.Handshake).ConfigureAwait(false) is { } failed)
        {
            return failed;
        }

        byte[] frame = MessageFraming.Encode((uint)FrontendRequest.SetMemTable, c.AckFlags, MemoryTablePayload.Encode([R(0, Mib, Uva, 0), R(0x1000_0000, Mib, Uva + 0x1000_0000, 0)]));
        p.SendBytes(frame.AsSpan(0, MessageHeader.Length + 40), [c.Fds.Memfd((long)Mib), c.Fds.Memfd((long)Mib)]);
        await Task.Delay(20).ConfigureAwait(false);
        return "abandoned";
    }

    private static async Task<string> MemTableReplacedAsync(ShieldContext c)
    {
        using var p = await c.ConnectAsync().ConfigureAwait(false);
        if (await PrefixAsync(c, p, Setup.Handshake).ConfigureAwait(false) is { } failed)
        {
            return failed;
        }

        int refused = 0;
        for (int i = 0; i < 50; i++)
        {
            using var fd = Interop.FileDescriptor.CreateMemfd(Soak.FdBag.MemfdName, (long)Mib); // closed here: the backend holds its own copy
            p.Send((uint)FrontendRequest.SetMemTable, c.AckFlags, MemoryTablePayload.Encode([R(0, Mib, Uva, 0)]), [fd.Value]);
            if (c.AckFlags != V)
            {
                ulong? ack = await c.AckAsync(p, FrontendRequest.SetMemTable).ConfigureAwait(false);
                if (ack is null)
                {
                    return $"closed at table {i + 1}";
                }

                refused += ack == 0 ? 0 : 1;
            }
        }

        return (refused == 0 ? "accepted x50" : $"refused {refused}/50") + "; " + await c.ObserveAsync(p, 0, false).ConfigureAwait(false);
    }

    private static async Task<string> InflightHugeAsync(ShieldContext c)
    {
        using var p = await c.ConnectAsync().ConfigureAwait(false);
        if (await PrefixAsync(c, p, Setup.Handshake, VhostUserProtocolFeatures.InflightShmfd).ConfigureAwait(false) is { } failed)
        {
            return failed;
        }

        p.Send(FrontendRequest.GetInflightFd, new InflightDescriptionPayload(0, 0, 4096, 256).Encode());
        var deadline = DateTime.UtcNow + c.Timeout;
        try
        {
            while (await p.ReceiveAsync(deadline - DateTime.UtcNow).ConfigureAwait(false) is { } f)
            {
                if (f.Header.Request == (uint)FrontendRequest.GetInflightFd)
                {
                    var d = f.Payload.Length >= 24 ? InflightDescriptionPayload.Read(f.Payload) : default;
                    return d.MmapSize == 0 ? "refused (empty reply)" : $"allocated {d.MmapSize / 1024} KiB for 4096 queues";
                }
            }

            return "closed";
        }
        catch (TimeoutException)
        {
            return "hung";
        }
    }
}
