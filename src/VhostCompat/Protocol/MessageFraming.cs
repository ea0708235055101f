using System.Buffers;

namespace VhostCompat.Protocol;

/// <summary>
/// The framing of vhost-user messages, both ways: <see cref="TryDecode"/> finds one complete message (header + exactly
/// <c>size</c> payload bytes) in a <see cref="ReadOnlySequence{T}"/> or says more bytes are needed, and
/// <see cref="Encode"/> builds one. Violations that make the stream untrustworthy (oversized size field, bad version
/// bits) throw <see cref="VhostUserFramingException"/> before anything is allocated.
/// </summary>
internal static class MessageFraming
{
    /// <summary>Tries to decode one message from the start of <paramref name="buffer"/>. On success, <paramref name="consumed"/> is the total length of the message.</summary>
    public static bool TryDecode(ReadOnlySequence<byte> buffer, out MessageHeader header, out byte[] payload, out long consumed)
    {
        header = default;
        payload = [];
        consumed = 0;
        if (buffer.Length < MessageHeader.Length)
        {
            return false;
        }

        Span<byte> h = stackalloc byte[MessageHeader.Length];
        buffer.Slice(0, MessageHeader.Length).CopyTo(h);
        header = MessageHeader.Read(h);
        CheckHeader(header);
        long total = MessageHeader.Length + (long)header.Size;
        if (buffer.Length < total)
        {
            return false;
        }

        payload = header.Size == 0 ? [] : buffer.Slice(MessageHeader.Length, header.Size).ToArray();
        consumed = total;
        return true;
    }

    /// <summary>Rejects headers whose framing cannot be trusted.</summary>
    public static void CheckHeader(MessageHeader header)
    {
        if (header.Size > MessageHeader.MaxPayloadSize)
        {
            throw new VhostUserFramingException($"payload size {header.Size} exceeds the {MessageHeader.MaxPayloadSize}-byte limit");
        }

        if ((header.Flags & MessageHeader.VersionMask) != MessageHeader.Version)
        {
            throw new VhostUserFramingException($"unsupported protocol version {header.Flags & MessageHeader.VersionMask} in flags 0x{header.Flags:x}");
        }
    }

    /// <summary>Encodes a message (header + payload) into a new array.</summary>
    public static byte[] Encode(uint request, uint flags, ReadOnlySpan<byte> payload)
    {
        var b = new byte[MessageHeader.Length + payload.Length];
        new MessageHeader(request, flags, (uint)payload.Length).Write(b);
        payload.CopyTo(b.AsSpan(MessageHeader.Length));
        return b;
    }
}
