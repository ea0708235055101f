using System.Buffers.Binary;
using System.Collections.Concurrent;
using VhostCompat.Queues;

namespace VhostCompat.Samples.Net;

/// <summary>
/// A small learning switch between vhost-user ports. All ports share one worker thread, so the data
/// path runs on that thread; only the MAC table is also read and written from the control thread
/// (device state for migration), hence a concurrent dictionary, written only when an entry changes.
/// </summary>
internal sealed class L2Switch
{
    private const int NetHeaderLength = 12; // virtio_net_hdr_v1 (VERSION_1 or MRG_RXBUF)
    private readonly ConcurrentDictionary<ulong, int> _macTable = new();
    private readonly Virtqueue?[] _rx;
    private readonly byte[] _header = new byte[NetHeaderLength];
    private readonly Responder? _responder;
    private readonly byte[] _reply = new byte[65536];

    /// <param name="ports">Number of vhost-user ports.</param>
    /// <param name="responder">An internal host answering ARP and ping on the switch (<c>--responder</c>), or null.</param>
    public L2Switch(int ports, Responder? responder = null)
    {
        _responder = responder;
        _rx = new Virtqueue?[ports];
        Stats = new PortStats[ports];
        for (int i = 0; i < ports; i++)
        {
            Stats[i] = new PortStats();
        }
    }

    public PortStats[] Stats { get; }

    public int Ports => _rx.Length;

    public Responder? Responder => _responder;

    public sealed class PortStats
    {
        public long TxPackets;
        public long TxBytes;
        public long RxPackets;
        public long RxDropped;
    }

    public void SetRx(int port, Virtqueue? queue) => _rx[port] = queue;

    /// <summary>The unicast MACs last seen on <paramref name="port"/> (big-endian 48-bit values), sorted.</summary>
    public ulong[] MacsOn(int port) => [.. _macTable.Where(kv => kv.Value == port).Select(kv => kv.Key).Order()];

    /// <summary>Teaches the switch that <paramref name="mac"/> sits behind <paramref name="port"/> (migrated state).</summary>
    public void Learn(int port, ulong mac) => _macTable[mac] = port;

    /// <summary>A frame sent by the guest on <paramref name="port"/>: learn its source, deliver or flood it.</summary>
    public void Forward(int port, ReadOnlySpan<byte> frame)
    {
        if (frame.Length < 14)
        {
            return;
        }

        ulong src = Mac(frame[6..12]);
        if ((frame[6] & 1) == 0 && (!_macTable.TryGetValue(src, out int known) || known != port))
        {
            _macTable[src] = port;
        }

        if (_responder is not null)
        {
            // The responder sits behind no port: its answers go straight back to the asking port.
            int n = _responder.TryAnswer(frame, _reply);
            if (n > 0)
            {
                Deliver(port, _reply.AsSpan(0, n));
            }

            if (_responder.IsUnicastToMe(frame))
            {
                return;
            }
        }

        bool multicast = (frame[0] & 1) != 0;
        if (!multicast && _macTable.TryGetValue(Mac(frame[..6]), out int target))
        {
            if (target != port)
            {
                Deliver(target, frame);
            }

            return;
        }

        for (int p = 0; p < _rx.Length; p++)
        {
            if (p != port)
            {
                Deliver(p, frame);
            }
        }
    }

    private static ulong Mac(ReadOnlySpan<byte> mac) =>
        ((ulong)BinaryPrimitives.ReadUInt16BigEndian(mac) << 32) | BinaryPrimitives.ReadUInt32BigEndian(mac[2..]);

    /// <summary>Copies a frame into the guest's RX buffers on <paramref name="port"/>, merging buffers when needed.</summary>
    private void Deliver(int port, ReadOnlySpan<byte> frame)
    {
        Virtqueue? rx = _rx[port];
        PortStats stats = Stats[port];
        if (rx is null || !rx.IsEnabled || rx.IsBroken)
        {
            stats.RxDropped++;
            return;
        }

        int total = NetHeaderLength + frame.Length;
        if (!rx.TryPop(out DescriptorChain? first))
        {
            stats.RxDropped++;
            return;
        }

        if (first.WritableLength <= NetHeaderLength)
        {
            // A guest-posted buffer too small for even the header: return it unused and drop the frame.
            rx.Push(first, 0);
            rx.NotifyGuest();
            stats.RxDropped++;
            return;
        }

        // Most guests post buffers larger than a frame: one chain, num_buffers = 1.
        if (first.WritableLength >= total)
        {
            WriteHeader(1);
            first.WriteWritable(0, _header);
            first.WriteWritable(NetHeaderLength, frame);
            rx.Push(first, total);
            rx.NotifyGuest();
            stats.RxPackets++;
            return;
        }

        // Mergeable RX buffers: spread the frame over several chains (num_buffers in the first header).
        int offset = 0;
        int buffers = 0;
        DescriptorChain? chain = first;
        DescriptorChain? head = first;
        int headWritten = 0;
        while (chain is not null && offset < frame.Length)
        {
            int room = chain.WritableLength - (buffers == 0 ? NetHeaderLength : 0);
            if (room <= 0)
            {
                rx.Push(chain, 0);
                break;
            }

            int n = Math.Min(room, frame.Length - offset);
            int written = chain.WriteWritable(buffers == 0 ? NetHeaderLength : 0, frame.Slice(offset, n));
            offset += written;
            buffers++;
            if (buffers == 1)
            {
                headWritten = NetHeaderLength + written;
            }
            else
            {
                rx.Push(chain, written);
            }

            chain = offset < frame.Length && rx.TryPop(out DescriptorChain? next) ? next : null;
        }

        WriteHeader((ushort)buffers);
        head.WriteWritable(0, _header);
        rx.Push(head, headWritten);
        rx.NotifyGuest();
        if (offset < frame.Length)
        {
            stats.RxDropped++; // ran out of buffers: the guest sees a short frame and drops it
        }
        else
        {
            stats.RxPackets++;
        }
    }

    private void WriteHeader(ushort buffers)
    {
        Array.Clear(_header);
        BinaryPrimitives.WriteUInt16LittleEndian(_header.AsSpan(10), buffers);
    }
}
