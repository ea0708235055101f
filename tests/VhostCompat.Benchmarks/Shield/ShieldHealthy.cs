using System.Buffers.Binary;
using VhostCompat.Benchmarks.Soak;
using VhostCompat.Frontend;
using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.Benchmarks.Shield;

/// <summary>
/// The well-formed session run after every case (the corruption check), with the SDK's own frontend: negotiation
/// (VERSION_1, REPLY_ACK and MQ where offered), 1 MiB of memfd guest RAM, every ring of the device configured,
/// started and enabled (DPDK's vhost library only starts a device once all its rings are), then one request and its
/// used element: a net TX frame on ring 1 (testpmd's io forwarding dequeues it) or a blk GET_ID on ring 0 (status OK).
/// Ends with GET_VRING_BASE on every ring, as QEMU stops a device.
/// </summary>
internal static class ShieldHealthy
{
    private const ulong RamSize = 1 << 20, Stride = 0x10000, Avail = 0x1000, Used = 0x2000, Buf = 0x3000;
    private const int RingSize = 16;

    /// <summary>Null when the session worked, else what went wrong.</summary>
    public static async Task<string?> CheckAsync(string path, bool net, TimeSpan timeout)
    {
        using var mem = new GuestMemory(0, RamSize);
        int queues = net ? 2 : 1, device = net ? 1 : 0;
        var kicks = Enumerable.Range(0, queues).Select(_ => new EventNotifier()).ToArray();
        var calls = Enumerable.Range(0, queues).Select(_ => new EventNotifier()).ToArray();
        try
        {
            await using var fe = VhostUserFrontend.FromConnectedSocket(await ShieldContext.ConnectSocketAsync(path, timeout).ConfigureAwait(false), timeout);
            using var cts = new CancellationTokenSource(timeout * 3);
            await fe.NegotiateAsync(VirtioFeatureBits.Version1, VhostUserProtocolFeatures.ReplyAck | VhostUserProtocolFeatures.Mq, cts.Token).ConfigureAwait(false);
            await fe.SetMemTableAsync([mem], cts.Token).ConfigureAwait(false);
            for (int q = 0; q < queues; q++)
            {
                ulong b = (ulong)q * Stride;
                await fe.SetVringNumAsync(q, RingSize, cts.Token).ConfigureAwait(false);
                await fe.SetVringBaseAsync(q, 0, cts.Token).ConfigureAwait(false);
                await fe.SetVringAddrAsync(q, mem.ToFrontendAddress(b), mem.ToFrontendAddress(b + Used), mem.ToFrontendAddress(b + Avail), cancellationToken: cts.Token).ConfigureAwait(false);
                await fe.SetVringCallAsync(q, calls[q], cts.Token).ConfigureAwait(false);
                await fe.SetVringKickAsync(q, kicks[q], cts.Token).ConfigureAwait(false);
                await fe.SetVringEnableAsync(q, true, cts.Token).ConfigureAwait(false);
            }

            Post(mem, (ulong)device * Stride, net);
            kicks[device].Signal();
            string? error = await WaitAsync(mem, (ulong)device * Stride, net, timeout).ConfigureAwait(false);
            for (int q = 0; q < queues; q++)
            {
                await fe.GetVringBaseAsync(q, cts.Token).ConfigureAwait(false);
            }

            return error;
        }
        catch (Exception ex) when (ex is IOException or VhostUserRequestException or System.Net.Sockets.SocketException or TimeoutException or OperationCanceledException)
        {
            return ex.Message;
        }
        finally
        {
            foreach (var n in kicks.Concat(calls))
            {
                n.Dispose();
            }
        }
    }

    private static void Post(GuestMemory mem, ulong ring, bool net)
    {
        if (net)
        {
            var frame = new byte[12 + 60]; // virtio_net_hdr_v1 (zero), then a broadcast ARP-typed frame
            frame.AsSpan(12, 6).Fill(0xFF);
            frame[18] = 0x02;
            frame[23] = 0x01;
            frame[24] = 0x08;
            frame[25] = 0x06;
            mem.Write(ring + Buf, frame);
            Descriptor(mem, ring, 0, ring + Buf, (uint)frame.Length, 0, 0);
        }
        else
        {
            var header = new byte[16];
            BinaryPrimitives.WriteUInt32LittleEndian(header, 8); // VIRTIO_BLK_T_GET_ID
            mem.Write(ring + Buf, header);
            mem.Write(ring + Buf + 0x200, [0xEE]);
            Descriptor(mem, ring, 0, ring + Buf, 16, 1, 1);
            Descriptor(mem, ring, 1, ring + Buf + 0x100, 20, 3, 2);
            Descriptor(mem, ring, 2, ring + Buf + 0x200, 1, 2, 0);
        }

        mem.Write(ring + Avail + 4, [0, 0]); // ring[0] = head 0
        mem.Write(ring + Avail + 2, [1, 0]); // avail.idx = 1
    }

    private static async Task<string?> WaitAsync(GuestMemory mem, ulong ring, bool net, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        var b = new byte[8];
        while (true)
        {
            mem.Read(ring + Used + 2, b.AsSpan(0, 2));
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

        mem.Read(ring + Used + 4, b);
        if (BinaryPrimitives.ReadUInt32LittleEndian(b) != 0)
        {
            return $"used id {BinaryPrimitives.ReadUInt32LittleEndian(b)}, expected 0";
        }

        if (!net)
        {
            mem.Read(ring + Buf + 0x200, b.AsSpan(0, 1));
            return b[0] == 0 ? null : $"blk status {b[0]}";
        }

        return null;
    }

    private static void Descriptor(GuestMemory mem, ulong ring, int i, ulong addr, uint len, ushort flags, ushort next)
    {
        var d = new byte[16];
        BinaryPrimitives.WriteUInt64LittleEndian(d, addr);
        BinaryPrimitives.WriteUInt32LittleEndian(d.AsSpan(8), len);
        BinaryPrimitives.WriteUInt16LittleEndian(d.AsSpan(12), flags);
        BinaryPrimitives.WriteUInt16LittleEndian(d.AsSpan(14), next);
        mem.Write(ring + (16 * (ulong)i), d);
    }
}
