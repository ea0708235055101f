using System.Buffers.Binary;

namespace VhostCompat.Fuzz.Targets;

/// <summary>
/// The fixed 12-byte header every ring input starts with, then the guest memory image (from GPA
/// 0x10000). Byte 0: ring size selector; byte 1: bit 0 indirect, bit 1 EVENT_IDX, bits 2–4
/// exerciser mode, bit 6 "ring addresses from bytes 6–11" (else packed back to back from 0x10000);
/// bytes 2–3 (split) or 2–5 (packed): the ring base from SET_VRING_BASE.
/// </summary>
internal readonly ref struct RingInput
{
    public const int HeaderSize = 12;

    public RingInput(ReadOnlySpan<byte> input)
    {
        Span<byte> h = stackalloc byte[HeaderSize];
        input[..Math.Min(input.Length, HeaderSize)].CopyTo(h);
        SizeByte = h[0];
        Indirect = (h[1] & 1) != 0;
        EventIndex = (h[1] & 2) != 0;
        Mode = (byte)((h[1] >> 2) & 7);
        CustomLayout = (h[1] & 0x40) != 0;
        Base16 = BinaryPrimitives.ReadUInt16LittleEndian(h[2..]);
        Base32 = BinaryPrimitives.ReadUInt32LittleEndian(h[2..]);
        Offset1 = BinaryPrimitives.ReadUInt16LittleEndian(h[6..]);
        Offset2 = BinaryPrimitives.ReadUInt16LittleEndian(h[8..]);
        Offset3 = BinaryPrimitives.ReadUInt16LittleEndian(h[10..]);
        Image = input.Length > HeaderSize ? input[HeaderSize..] : [];
    }

    public byte SizeByte { get; }

    public bool Indirect { get; }

    public bool EventIndex { get; }

    public byte Mode { get; }

    public bool CustomLayout { get; }

    public ushort Base16 { get; }

    public uint Base32 { get; }

    public ushort Offset1 { get; }

    public ushort Offset2 { get; }

    public ushort Offset3 { get; }

    public ReadOnlySpan<byte> Image { get; }

    public static ulong Align(ulong v, ulong a) => (v + a - 1) & ~(a - 1);
}
