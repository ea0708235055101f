using System.Buffers.Binary;
using VhostCompat.Queues;

namespace VhostCompat.Fuzz.Targets;

/// <summary>
/// Seed rings written the way a driver writes them: a few chains (direct, readable + writable,
/// indirect) in the default back-to-back layout. Offsets in the image are from GPA 0x10000;
/// buffers live from image offset 0x2000 (GPA 0x12000), indirect tables at 0x3000.
/// </summary>
internal static class RingSeeds
{
    private const ushort N = VirtqueueLayout.DescFlagNext;
    private const ushort W = VirtqueueLayout.DescFlagWrite;
    private const ushort I = VirtqueueLayout.DescFlagIndirect;
    private const ulong Buf = FuzzRam.Gpa + 0x2000;
    private const int Table = 0x3000;

    public static IEnumerable<(string Name, byte[] Data)> Split()
    {
        foreach (var (sizeByte, flags, name) in new (byte, byte, string)[] { (3, 0, "split-8"), (3, 3, "split-8-indirect-eventidx"), (8, 1, "split-256-indirect"), (0, 0, "split-1") })
        {
            int size = 1 << sizeByte;
            var header = Header(sizeByte, flags, 0);
            var r = new RingInput(header);
            var (desc, avail, _) = SplitRingTarget.Layout(size, r);
            var img = new byte[0x3100];
            int d = (int)(desc - FuzzRam.Gpa);
            int a = (int)(avail - FuzzRam.Gpa);
            Desc(img, d, 0, Buf, 64, 0, 0);
            var heads = new List<ushort> { 0 };
            if (size >= 4)
            {
                Desc(img, d, 1, Buf + 0x100, 16, N, 2);
                Desc(img, d, 2, Buf + 0x200, 512, W, 0);
                heads.Add(1);
                if ((flags & 1) != 0)
                {
                    Desc(img, d, 3, FuzzRam.Gpa + Table, 48, I, 0);
                    Desc(img, Table, 0, Buf + 0x400, 12, N, 1);
                    Desc(img, Table, 1, Buf + 0x500, 100, N, 2);
                    Desc(img, Table, 2, Buf + 0x600, 256, W, 0);
                    heads.Add(3);
                }
            }

            for (int k = 0; k < heads.Count; k++)
            {
                BinaryPrimitives.WriteUInt16LittleEndian(img.AsSpan(a + 4 + (2 * k)), heads[k]);
            }

            BinaryPrimitives.WriteUInt16LittleEndian(img.AsSpan(a + 2), (ushort)heads.Count);
            yield return (name, [.. header, .. img]);
        }
    }

    public static IEnumerable<(string Name, byte[] Data)> Packed()
    {
        foreach (var (sizeByte, flags, name) in new (byte, byte, string)[] { (7, 0, "packed-8"), (7, 3, "packed-8-indirect-eventidx"), (255, 1, "packed-256-indirect"), (4, 0, "packed-5") })
        {
            int size = 1 + sizeByte;
            const uint Base = 0x8000_8000; // both wrap counters 1, indices 0
            var header = Header(sizeByte, flags, Base);
            var r = new RingInput(header);
            var (ring, _, _) = PackedRingTarget.Layout(size, r);
            var img = new byte[0x3100];
            int d = (int)(ring - FuzzRam.Gpa);
            ushort avail = VirtqueueLayout.PackedFlagAvail;
            int slot = 0;
            Desc(img, d, slot++, Buf, 64, 0, id: 0, packedFlags: avail);
            if (size >= 4)
            {
                Desc(img, d, slot++, Buf + 0x100, 16, 0, id: 1, packedFlags: (ushort)(avail | N));
                Desc(img, d, slot++, Buf + 0x200, 512, 0, id: 1, packedFlags: (ushort)(avail | W));
            }

            if ((flags & 1) != 0 && size >= 4)
            {
                Desc(img, d, slot, FuzzRam.Gpa + Table, 48, 0, id: 2, packedFlags: (ushort)(avail | I));
                Desc(img, Table, 0, Buf + 0x400, 12, 0, id: 0, packedFlags: 0);
                Desc(img, Table, 1, Buf + 0x500, 100, 0, id: 0, packedFlags: 0);
                Desc(img, Table, 2, Buf + 0x600, 256, 0, id: 0, packedFlags: W);
            }

            yield return (name, [.. header, .. img]);
        }
    }

    public static byte[] Header(byte sizeByte, byte flags, uint @base)
    {
        var h = new byte[RingInput.HeaderSize];
        h[0] = sizeByte;
        h[1] = flags;
        BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(2), @base);
        return h;
    }

    /// <summary>A split descriptor (addr, len, flags, next) or, with <paramref name="packedFlags"/>, a packed one (addr, len, id, flags).</summary>
    public static void Desc(byte[] img, int table, int i, ulong addr, uint len, ushort flags, ushort next = 0, ushort id = 0, ushort? packedFlags = null)
    {
        var e = img.AsSpan(table + (16 * i), 16);
        BinaryPrimitives.WriteUInt64LittleEndian(e, addr);
        BinaryPrimitives.WriteUInt32LittleEndian(e[8..], len);
        if (packedFlags is { } pf)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(e[12..], id);
            BinaryPrimitives.WriteUInt16LittleEndian(e[14..], pf);
        }
        else
        {
            BinaryPrimitives.WriteUInt16LittleEndian(e[12..], flags);
            BinaryPrimitives.WriteUInt16LittleEndian(e[14..], next);
        }
    }
}
