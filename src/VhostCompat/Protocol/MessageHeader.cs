using System.Buffers.Binary;

namespace VhostCompat.Protocol;

/// <summary>The 12-byte vhost-user message header: request code, flags, payload size (little-endian).</summary>
internal readonly record struct MessageHeader(uint Request, uint Flags, uint Size)
{
    public const int Length = 12;

    /// <summary>Largest payload accepted; anything larger closes the connection without allocating.</summary>
    public const int MaxPayloadSize = 4096;

    public const uint VersionMask = 0x3;
    public const uint Version = 0x1;
    public const uint ReplyFlag = 0x4;
    public const uint NeedReplyFlag = 0x8;
    public const uint ReservedMask = ~0xFu;

    /// <summary>Flags of every reply: version 1 + REPLY, nothing else (QEMU and DPDK compare the whole word).</summary>
    public const uint ReplyFlags = Version | ReplyFlag;

    public bool NeedReply => (Flags & NeedReplyFlag) != 0;

    public bool IsReply => (Flags & ReplyFlag) != 0;

    public static MessageHeader Read(ReadOnlySpan<byte> source) => new(
        BinaryPrimitives.ReadUInt32LittleEndian(source),
        BinaryPrimitives.ReadUInt32LittleEndian(source[4..]),
        BinaryPrimitives.ReadUInt32LittleEndian(source[8..]));

    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(destination, Request);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[4..], Flags);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[8..], Size);
    }
}
