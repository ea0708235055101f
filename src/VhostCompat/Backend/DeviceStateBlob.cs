using System.Buffers.Binary;
using System.Security.Cryptography;

namespace VhostCompat.Backend;

/// <summary>
/// The SDK's envelope around a device's opaque state for SET_DEVICE_STATE_FD transfers:
/// magic "VCDS", envelope version, device type, the device's own state version, payload length,
/// then the payload and a SHA-256 of everything before it (in the framework; no extra dependency). Truncated, oversized, corrupted or
/// newer-format blobs are refused with a reason.
/// </summary>
internal static class DeviceStateBlob
{
    public const uint Magic = 0x53444356; // "VCDS" little-endian
    public const uint EnvelopeVersion = 1;
    public const int HeaderLength = 20;
    public const int MaxPayload = 16 << 20;
    public const int DigestLength = 32;

    public static byte[] Wrap(uint deviceType, uint stateVersion, ReadOnlySpan<byte> payload)
    {
        var blob = new byte[HeaderLength + payload.Length + DigestLength];
        BinaryPrimitives.WriteUInt32LittleEndian(blob, Magic);
        BinaryPrimitives.WriteUInt32LittleEndian(blob.AsSpan(4), EnvelopeVersion);
        BinaryPrimitives.WriteUInt32LittleEndian(blob.AsSpan(8), deviceType);
        BinaryPrimitives.WriteUInt32LittleEndian(blob.AsSpan(12), stateVersion);
        BinaryPrimitives.WriteUInt32LittleEndian(blob.AsSpan(16), (uint)payload.Length);
        payload.CopyTo(blob.AsSpan(HeaderLength));
        SHA256.HashData(blob.AsSpan(0, HeaderLength + payload.Length), blob.AsSpan(HeaderLength + payload.Length));
        return blob;
    }

    /// <summary>Validates a received blob; returns the reason it is unusable, or null with the payload and its state version.</summary>
    public static string? TryUnwrap(ReadOnlySpan<byte> blob, uint deviceType, out uint stateVersion, out ReadOnlySpan<byte> payload)
    {
        stateVersion = 0;
        payload = default;
        if (blob.Length < HeaderLength + DigestLength)
        {
            return $"device state of {blob.Length} bytes is truncated (the envelope alone is {HeaderLength + DigestLength})";
        }

        if (BinaryPrimitives.ReadUInt32LittleEndian(blob) != Magic)
        {
            return "device state does not start with the VCDS magic";
        }

        uint envelope = BinaryPrimitives.ReadUInt32LittleEndian(blob[4..]);
        if (envelope != EnvelopeVersion)
        {
            return $"device state envelope version {envelope} is not supported (this build reads version {EnvelopeVersion})";
        }

        uint type = BinaryPrimitives.ReadUInt32LittleEndian(blob[8..]);
        if (type != deviceType)
        {
            return $"device state is for device type {type}, this device is type {deviceType}";
        }

        uint length = BinaryPrimitives.ReadUInt32LittleEndian(blob[16..]);
        if (length > MaxPayload || (long)HeaderLength + length + DigestLength != blob.Length)
        {
            return $"device state length {length} does not match the {blob.Length} bytes received";
        }

        Span<byte> digest = stackalloc byte[DigestLength];
        SHA256.HashData(blob[..(HeaderLength + (int)length)], digest);
        if (!digest.SequenceEqual(blob[(HeaderLength + (int)length)..]))
        {
            return "device state checksum mismatch (corrupted in transfer)";
        }

        stateVersion = BinaryPrimitives.ReadUInt32LittleEndian(blob[12..]);
        payload = blob.Slice(HeaderLength, (int)length);
        return null;
    }
}
