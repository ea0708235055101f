using System.Buffers.Binary;
using VhostCompat.Queues;

namespace VhostCompat.Tests.Queues;

internal enum ModelKind
{
    /// <summary>Nothing available.</summary>
    None,

    /// <summary>A valid chain that must be popped exactly.</summary>
    Ok,

    /// <summary>A guest error: the queue must break.</summary>
    Bad,

    /// <summary>The requirements and the library disagree on legality (see the failing unit tests): pop it exactly or break.</summary>
    Either,
}

internal readonly record struct Seg(ulong Gpa, uint Len, bool Write);

internal sealed record ModelOutcome(ModelKind Kind, ushort Head = 0, int Slots = 0, List<Seg>? Segs = null, string Why = "")
{
    public int Readable => Segs!.Where(s => !s.Write).Sum(s => (int)s.Len);

    public int Writable => Segs!.Where(s => s.Write).Sum(s => (int)s.Len);

    public static ModelOutcome Bad(string why) => new(ModelKind.Bad, Why: why);
}

/// <summary>
/// An independent reference walker over the test's view of guest memory (virtio 1.x §2.6/§2.7 plus
/// HOSTILE-INPUTS D1–D21 as the SDK documents them). Where the requirements say "chain error" but the SDK
/// currently accepts (indirect tables / chains longer than the ring), or where the spec allows what the SDK refuses
/// (packed buffer ids in descriptors other than the last), it answers <see cref="ModelKind.Either"/>.
/// </summary>
internal static class RingModel
{
    private const ushort N = VirtqueueLayout.DescFlagNext;
    private const ushort W = VirtqueueLayout.DescFlagWrite;
    private const ushort I = VirtqueueLayout.DescFlagIndirect;

    private static (ulong Addr, uint Len, ushort A, ushort B) ReadDesc(GuestRam ram, ulong gpa)
    {
        byte[] d = ram.Read(gpa, 16);
        return (BinaryPrimitives.ReadUInt64LittleEndian(d), BinaryPrimitives.ReadUInt32LittleEndian(d.AsSpan(8)),
            BinaryPrimitives.ReadUInt16LittleEndian(d.AsSpan(12)), BinaryPrimitives.ReadUInt16LittleEndian(d.AsSpan(14)));
    }

    private static bool AddSeg(GuestRam ram, List<Seg> segs, ulong addr, uint len, bool write, ref long readable, ref long writable)
    {
        if (len == 0)
        {
            return true; // never translated
        }

        if (!ram.TryPieces(addr, len, []))
        {
            return false;
        }

        if (write)
        {
            writable += len;
        }
        else
        {
            readable += len;
        }

        if (readable > int.MaxValue || writable > int.MaxValue)
        {
            return false;
        }

        segs.Add(new Seg(addr, len, write));
        return true;
    }

    public static ModelOutcome Split(GuestRam ram, int size, ulong desc, ulong avail, ushort lastAvail, bool[] inFlight, bool indirectFeature)
    {
        ushort availIdx = ram.R16(avail + 2);
        ushort pending = (ushort)(availIdx - lastAvail);
        if (pending == 0)
        {
            return new ModelOutcome(ModelKind.None);
        }

        if (pending > size)
        {
            return ModelOutcome.Bad("avail index jump");
        }

        ushort head = ram.R16(avail + 4 + (2 * (ulong)(lastAvail % size)));
        if (head >= size)
        {
            return ModelOutcome.Bad("head out of range");
        }

        if (inFlight[head])
        {
            return ModelOutcome.Bad("head in flight");
        }

        var segs = new List<Seg>();
        long readable = 0, writable = 0;
        ulong table = desc;
        int tableSize = size, index = head, steps = 0, buffers = 0;
        bool inIndirect = false, sawWrite = false, either = false;
        while (true)
        {
            if (++steps > tableSize)
            {
                return ModelOutcome.Bad("loop");
            }

            var (addr, len, flags, next) = ReadDesc(ram, table + ((ulong)index * 16));
            if ((flags & I) != 0)
            {
                if (inIndirect || !indirectFeature || (flags & N) != 0 || len == 0 || len % 16 != 0 || len / 16 > VirtqueueLayout.MaxIndirectEntries
                    || !ram.TryPieces(addr, len, []))
                {
                    return ModelOutcome.Bad("indirect");
                }

                either |= len / 16 > size; // D5
                table = addr;
                tableSize = (int)(len / 16);
                inIndirect = true;
                index = 0;
                steps = 0;
                continue;
            }

            bool write = (flags & W) != 0;
            if (!write && sawWrite)
            {
                return ModelOutcome.Bad("readable after writable");
            }

            sawWrite |= write;
            either |= ++buffers > size; // D4
            if (!AddSeg(ram, segs, addr, len, write, ref readable, ref writable))
            {
                return ModelOutcome.Bad("buffer outside memory");
            }

            if ((flags & N) == 0)
            {
                return new ModelOutcome(either ? ModelKind.Either : ModelKind.Ok, head, 0, segs);
            }

            if (next >= tableSize)
            {
                return ModelOutcome.Bad("next out of range");
            }

            index = next;
        }
    }

    public static bool PackedAvailable(ushort flags, bool wrap) =>
        ((flags & VirtqueueLayout.PackedFlagAvail) != 0) == wrap && ((flags & VirtqueueLayout.PackedFlagUsed) != 0) != wrap;

    public static ModelOutcome Packed(GuestRam ram, int size, ulong ring, int lastAvail, bool availWrap, bool[] inFlight, bool indirectFeature)
    {
        if (!PackedAvailable(ReadDesc(ram, ring + ((ulong)lastAvail * 16)).B, availWrap))
        {
            return new ModelOutcome(ModelKind.None);
        }

        var segs = new List<Seg>();
        long readable = 0, writable = 0;
        int slot = lastAvail, slots = 0;
        bool sawWrite = false, either = false;
        ushort id;
        while (true)
        {
            if (++slots > size)
            {
                return ModelOutcome.Bad("chain longer than the ring");
            }

            var (addr, len, descId, flags) = ReadDesc(ram, ring + ((ulong)slot * 16));
            id = descId;
            bool last = (flags & N) == 0 || (flags & I) != 0;
            if (id >= size || (slots == 1 && inFlight[id]))
            {
                if (last)
                {
                    return ModelOutcome.Bad(id >= size ? "id out of range" : "id in flight");
                }

                // Only the last descriptor carries the buffer id (virtio 1.1 "Next Flag"); the SDK also checks the others.
                either = true;
            }

            if ((flags & I) != 0)
            {
                if (!indirectFeature || (flags & N) != 0 || slots != 1 || len == 0 || len % 16 != 0 || len / 16 > VirtqueueLayout.MaxIndirectEntries
                    || !ram.TryPieces(addr, len, []))
                {
                    return ModelOutcome.Bad("indirect");
                }

                either |= len / 16 > size; // D21
                for (int i = 0; i < len / 16; i++)
                {
                    var e = ReadDesc(ram, addr + ((ulong)i * 16));
                    if ((e.B & I) != 0)
                    {
                        return ModelOutcome.Bad("nested");
                    }

                    bool w = (e.B & W) != 0;
                    if (!w && sawWrite)
                    {
                        return ModelOutcome.Bad("readable after writable");
                    }

                    sawWrite |= w;
                    if (!AddSeg(ram, segs, e.Addr, e.Len, w, ref readable, ref writable))
                    {
                        return ModelOutcome.Bad("indirect buffer outside memory");
                    }
                }

                break;
            }

            bool write = (flags & W) != 0;
            if (!write && sawWrite)
            {
                return ModelOutcome.Bad("readable after writable");
            }

            sawWrite |= write;
            if (!AddSeg(ram, segs, addr, len, write, ref readable, ref writable))
            {
                return ModelOutcome.Bad("buffer outside memory");
            }

            if ((flags & N) == 0)
            {
                break;
            }

            slot = slot + 1 == size ? 0 : slot + 1;
        }

        if (inFlight[id])
        {
            return ModelOutcome.Bad("last id in flight");
        }

        return new ModelOutcome(either ? ModelKind.Either : ModelKind.Ok, id, slots, segs);
    }

    /// <summary>Bytes of the readable segments, gathered in order.</summary>
    public static byte[] Gather(GuestRam ram, List<Seg> segs) =>
        [.. segs.Where(s => !s.Write).SelectMany(s => ram.Read(s.Gpa, (int)s.Len))];

    /// <summary>Applies <paramref name="data"/> to the writable segments of <paramref name="expected"/> (a file image), as WriteWritable must.</summary>
    public static void Scatter(GuestRam ram, byte[] expected, List<Seg> segs, ReadOnlySpan<byte> data)
    {
        int at = 0;
        foreach (var s in segs.Where(s => s.Write))
        {
            var pieces = new List<(long Offset, long Length)>();
            ram.TryPieces(s.Gpa, s.Len, pieces).Should().BeTrue();
            foreach (var (off, len) in pieces)
            {
                int n = (int)Math.Min(len, data.Length - at);
                if (n <= 0)
                {
                    return;
                }

                data.Slice(at, n).CopyTo(expected.AsSpan((int)off, n));
                at += n;
            }
        }
    }

    public static void ShouldEqualImage(GuestRam ram, byte[] expected, string context)
    {
        var now = ram.File;
        if (now.SequenceEqual(expected))
        {
            return;
        }

        int i = 0;
        while (now[i] == expected[i])
        {
            i++;
        }

        Assert.Fail($"{context}: file byte 0x{i:x} is 0x{now[i]:x2}, expected 0x{expected[i]:x2}");
    }
}
