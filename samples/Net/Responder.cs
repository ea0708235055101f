using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace VhostCompat.Samples.Net;

/// <summary>
/// An internal host on the switch (<c>--responder IP</c>): it answers ARP requests for its IPv4
/// address and ICMP echo requests sent to it, so a guest can ping something without a second VM.
/// Its MAC is derived from the address (locally administered <c>02:76</c> followed by the four address bytes), so every
/// switch started with the same address answers with the same MAC — a migrated guest keeps its ARP
/// cache entry valid. Runs on the switch's single worker thread; not thread-safe.
/// </summary>
internal sealed class Responder
{
    /// <summary>Ethernet frames are padded to this length (without FCS).</summary>
    public const int MinimumFrameLength = 60;

    private const int EthernetHeader = 14;
    private const ushort EtherTypeArp = 0x0806;
    private const ushort EtherTypeIpv4 = 0x0800;

    private readonly byte[] _ip;
    private readonly byte[] _mac;

    public Responder(IPAddress address)
    {
        ArgumentNullException.ThrowIfNull(address);
        if (address.AddressFamily != AddressFamily.InterNetwork)
        {
            throw new ArgumentException($"the responder needs an IPv4 address, not {address}", nameof(address));
        }

        Address = address;
        _ip = address.GetAddressBytes();
        _mac = [0x02, 0x76, _ip[0], _ip[1], _ip[2], _ip[3]];
    }

    public IPAddress Address { get; }

    /// <summary>The responder's MAC address.</summary>
    public ReadOnlySpan<byte> Mac => _mac;

    public long ArpReplies { get; private set; }

    public long EchoReplies { get; private set; }

    /// <summary>Frames addressed to the responder (its MAC, or broadcast) that it did not answer.</summary>
    public long Ignored { get; private set; }

    /// <summary>The MAC as text, e.g. 02:76:0a:00:00:01.</summary>
    public string MacText => string.Join(':', _mac.Select(b => b.ToString("x2", System.Globalization.CultureInfo.InvariantCulture)));

    /// <summary>True when the frame's destination MAC is the responder's own (not broadcast).</summary>
    public bool IsUnicastToMe(ReadOnlySpan<byte> frame) => frame.Length >= 6 && frame[..6].SequenceEqual(_mac);

    /// <summary>
    /// Builds the answer to <paramref name="frame"/> (an Ethernet frame without virtio header) into
    /// <paramref name="reply"/>: an ARP reply for an ARP request asking for the responder's address,
    /// an ICMP echo reply for a well-formed, unfragmented IPv4 ICMP echo request to it. Returns the
    /// reply's length, or 0 when the frame needs no answer (or is malformed).
    /// </summary>
    /// <param name="frame">The frame as the guest sent it.</param>
    /// <param name="reply">Room for the reply: at least <c>max(frame.Length, 60)</c> bytes.</param>
    public int TryAnswer(ReadOnlySpan<byte> frame, Span<byte> reply)
    {
        if (frame.Length < EthernetHeader)
        {
            return 0;
        }

        bool broadcast = frame[..6].SequenceEqual((ReadOnlySpan<byte>)[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        if (!broadcast && !IsUnicastToMe(frame))
        {
            return 0;
        }

        ushort type = BinaryPrimitives.ReadUInt16BigEndian(frame[12..]);
        int n = type switch
        {
            EtherTypeArp => AnswerArp(frame, reply),
            EtherTypeIpv4 when !broadcast => AnswerEcho(frame, reply),
            _ => 0,
        };
        if (n == 0)
        {
            Ignored++;
        }

        return n;
    }

    private int AnswerArp(ReadOnlySpan<byte> frame, Span<byte> reply)
    {
        // htype 1 (Ethernet), ptype 0x0800, hlen 6, plen 4, op 1 (request), target IP = ours.
        ReadOnlySpan<byte> arp = frame[EthernetHeader..];
        if (arp.Length < 28
            || BinaryPrimitives.ReadUInt16BigEndian(arp) != 1
            || BinaryPrimitives.ReadUInt16BigEndian(arp[2..]) != EtherTypeIpv4
            || arp[4] != 6 || arp[5] != 4
            || BinaryPrimitives.ReadUInt16BigEndian(arp[6..]) != 1
            || !arp.Slice(24, 4).SequenceEqual(_ip))
        {
            return 0;
        }

        if (reply.Length < MinimumFrameLength)
        {
            throw new ArgumentException("reply buffer too small", nameof(reply));
        }

        ReadOnlySpan<byte> senderMac = arp.Slice(8, 6);
        ReadOnlySpan<byte> senderIp = arp.Slice(14, 4);
        reply[..MinimumFrameLength].Clear();
        senderMac.CopyTo(reply);                                  // to the asker
        _mac.CopyTo(reply[6..]);                                  // from us
        BinaryPrimitives.WriteUInt16BigEndian(reply[12..], EtherTypeArp);
        Span<byte> r = reply[EthernetHeader..];
        BinaryPrimitives.WriteUInt16BigEndian(r, 1);              // Ethernet
        BinaryPrimitives.WriteUInt16BigEndian(r[2..], EtherTypeIpv4);
        r[4] = 6;
        r[5] = 4;
        BinaryPrimitives.WriteUInt16BigEndian(r[6..], 2);         // reply
        _mac.CopyTo(r[8..]);                                      // sender hardware address: us
        _ip.CopyTo(r[14..]);                                      // sender protocol address: us
        senderMac.CopyTo(r[18..]);                                // target: the asker
        senderIp.CopyTo(r[24..]);
        ArpReplies++;
        return MinimumFrameLength;
    }

    private int AnswerEcho(ReadOnlySpan<byte> frame, Span<byte> reply)
    {
        ReadOnlySpan<byte> ip = frame[EthernetHeader..];
        if (ip.Length < 20 || ip[0] >> 4 != 4)
        {
            return 0;
        }

        int headerLength = (ip[0] & 0x0f) * 4;
        int totalLength = BinaryPrimitives.ReadUInt16BigEndian(ip[2..]);
        ushort fragment = BinaryPrimitives.ReadUInt16BigEndian(ip[6..]);
        if (headerLength < 20 || totalLength < headerLength + 8 || totalLength > ip.Length
            || (fragment & 0x3fff) != 0                           // MF set or an offset: a fragment
            || ip[9] != 1                                         // ICMP
            || !ip.Slice(16, 4).SequenceEqual(_ip)
            || Checksum(ip[..headerLength]) != 0)
        {
            return 0;
        }

        ReadOnlySpan<byte> icmp = ip[headerLength..totalLength];
        if (icmp[0] != 8 || icmp[1] != 0 || Checksum(icmp) != 0)  // echo request, code 0, intact
        {
            return 0;
        }

        int replyIpLength = 20 + icmp.Length;                     // options are not echoed
        int length = Math.Max(EthernetHeader + replyIpLength, MinimumFrameLength);
        if (reply.Length < length)
        {
            throw new ArgumentException("reply buffer too small", nameof(reply));
        }

        reply[..length].Clear();
        frame.Slice(6, 6).CopyTo(reply);                          // back to the sender's MAC
        _mac.CopyTo(reply[6..]);
        BinaryPrimitives.WriteUInt16BigEndian(reply[12..], EtherTypeIpv4);
        Span<byte> r = reply[EthernetHeader..];
        r[0] = 0x45;
        r[1] = ip[1];                                             // same DSCP/ECN
        BinaryPrimitives.WriteUInt16BigEndian(r[2..], (ushort)replyIpLength);
        ip.Slice(4, 2).CopyTo(r[4..]);                            // identification
        r[8] = 64;                                                // TTL
        r[9] = 1;
        _ip.CopyTo(r[12..]);                                      // from us
        ip.Slice(12, 4).CopyTo(r[16..]);                          // to the requester
        BinaryPrimitives.WriteUInt16BigEndian(r[10..], Checksum(r[..20]));
        Span<byte> e = r.Slice(20, icmp.Length);
        icmp.CopyTo(e);                                           // identifier, sequence, payload
        e[0] = 0;                                                 // echo reply
        e[2] = 0;
        e[3] = 0;
        BinaryPrimitives.WriteUInt16BigEndian(e[2..], Checksum(e));
        EchoReplies++;
        return length;
    }

    /// <summary>The Internet checksum (RFC 1071) of <paramref name="data"/>; 0 over a block that carries a correct one.</summary>
    public static ushort Checksum(ReadOnlySpan<byte> data)
    {
        uint sum = 0;
        int i = 0;
        for (; i + 1 < data.Length; i += 2)
        {
            sum += BinaryPrimitives.ReadUInt16BigEndian(data[i..]);
        }

        if (i < data.Length)
        {
            sum += (uint)data[i] << 8;
        }

        while (sum > 0xffff)
        {
            sum = (sum & 0xffff) + (sum >> 16);
        }

        return (ushort)~sum;
    }
}
