using System.Buffers.Binary;
using VhostCompat.Interop;
using VhostCompat.Memory;
using VhostCompat.Protocol;
using VhostCompat.Tests.Support;

namespace VhostCompat.Tests.Queues;

/// <summary>One guest memory region: where it sits in guest physical space and in the backing memfd.</summary>
internal readonly record struct RegionSpec(ulong Gpa, ulong Size, ulong FileOffset);

/// <summary>
/// Guest memory owned by the test: one memfd, mapped by the library through a <see cref="GuestMemoryTable"/>
/// and by the test through a second, independent mapping of the whole file. Bytes of the file that belong to
/// no region (a guard page before and after) act as canaries "around" guest memory. Frontend virtual
/// addresses are <c>gpa + UaDelta</c> for every region.
/// </summary>
internal sealed unsafe class GuestRam : IDisposable
{
    public const ulong UaDelta = 0x7F00_0000_0000;
    public const byte Canary = 0xC5;

    private readonly FileDescriptor _fd;
    private readonly MemoryMapping _view;

    public GuestRam(long fileSize, params RegionSpec[] specs)
    {
        FileSize = fileSize;
        Specs = specs;
        _fd = Memfd.Create(fileSize, Memfd.UniqueName("vhc-ring"));
        _view = Memfd.MapAgain(_fd, (ulong)fileSize);
        var regions = new GuestMemoryRegion[specs.Length];
        for (int i = 0; i < specs.Length; i++)
        {
            var s = specs[i];
            regions[i] = GuestMemoryRegion.TryMap(new MemoryRegionPayload(s.Gpa, s.Size, s.Gpa + UaDelta, s.FileOffset), _fd, out string error)
                ?? throw new InvalidOperationException(error);
        }

        Table = new GuestMemoryTable(regions);
        File.Fill(Canary);
    }

    /// <summary>Default memory: one 64 KiB region at GPA 0x10000, file offset 0x1000, with a guard page on either side.</summary>
    public static GuestRam Single(ulong size = 0x10000) => new((long)size + 0x2000, new RegionSpec(0x10000, size, 0x1000));

    public long FileSize { get; }

    public RegionSpec[] Specs { get; }

    public GuestMemoryTable Table { get; }

    /// <summary>The whole backing file as the test sees it.</summary>
    public Span<byte> File => new((void*)_view.Address, checked((int)FileSize));

    public static ulong Ua(ulong gpa) => gpa + UaDelta;

    public void Dispose()
    {
        Table.Release();
        _view.Dispose();
        _fd.Dispose();
    }

    /// <summary>File offset of a guest physical address, or -1 when no region holds it.</summary>
    public long FileOffsetOrMinus(ulong gpa)
    {
        foreach (var s in Specs)
        {
            if (gpa >= s.Gpa && gpa - s.Gpa < s.Size)
            {
                return (long)(s.FileOffset + (gpa - s.Gpa));
            }
        }

        return -1;
    }

    public long FileOffset(ulong gpa)
    {
        long off = FileOffsetOrMinus(gpa);
        return off >= 0 ? off : throw new ArgumentOutOfRangeException(nameof(gpa), $"0x{gpa:x} is not guest memory");
    }

    /// <summary>
    /// Splits [gpa, gpa+len) into file ranges the way a piecewise translator must (adjacent regions allowed);
    /// false if any byte is unmapped or the range wraps. A zero length is always fine and yields nothing.
    /// </summary>
    public bool TryPieces(ulong gpa, ulong len, List<(long Offset, long Length)> pieces)
    {
        if (len == 0)
        {
            return true;
        }

        if (gpa > ulong.MaxValue - (len - 1))
        {
            return false;
        }

        while (len > 0)
        {
            RegionSpec? hit = null;
            foreach (var s in Specs)
            {
                if (gpa >= s.Gpa && gpa - s.Gpa < s.Size)
                {
                    hit = s;
                    break;
                }
            }

            if (hit is not { } r)
            {
                return false;
            }

            ulong piece = Math.Min(len, r.Size - (gpa - r.Gpa));
            pieces.Add(((long)(r.FileOffset + (gpa - r.Gpa)), (long)piece));
            gpa += piece;
            len -= piece;
        }

        return true;
    }

    /// <summary>True when [gpa, gpa+len) lies inside a single region.</summary>
    public bool InOneRegion(ulong gpa, ulong len)
    {
        foreach (var s in Specs)
        {
            if (gpa >= s.Gpa && gpa - s.Gpa < s.Size && len <= s.Size - (gpa - s.Gpa))
            {
                return true;
            }
        }

        return false;
    }

    public Span<byte> Bytes(ulong gpa, int length)
    {
        long off = FileOffset(gpa);
        if (length > 0)
        {
            FileOffset(gpa + (ulong)length - 1);
        }

        return File.Slice((int)off, length);
    }

    public void Write(ulong gpa, ReadOnlySpan<byte> data)
    {
        var pieces = new List<(long, long)>();
        if (!TryPieces(gpa, (ulong)data.Length, pieces))
        {
            throw new ArgumentOutOfRangeException(nameof(gpa));
        }

        int at = 0;
        foreach (var (off, len) in pieces)
        {
            data.Slice(at, (int)len).CopyTo(File.Slice((int)off, (int)len));
            at += (int)len;
        }
    }

    public byte[] Read(ulong gpa, int length)
    {
        var pieces = new List<(long, long)>();
        if (!TryPieces(gpa, (ulong)length, pieces))
        {
            throw new ArgumentOutOfRangeException(nameof(gpa));
        }

        var result = new byte[length];
        int at = 0;
        foreach (var (off, len) in pieces)
        {
            File.Slice((int)off, (int)len).CopyTo(result.AsSpan(at));
            at += (int)len;
        }

        return result;
    }

    public void Fill(ulong gpa, int length, byte value) => Bytes(gpa, length).Fill(value);

    // Field writes go piecewise like the guest's own: a field may straddle two regions.
    public void W16(ulong gpa, ushort v)
    {
        Span<byte> b = stackalloc byte[2];
        BinaryPrimitives.WriteUInt16LittleEndian(b, v);
        Write(gpa, b);
    }

    public void W32(ulong gpa, uint v)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, v);
        Write(gpa, b);
    }

    public void W64(ulong gpa, ulong v)
    {
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(b, v);
        Write(gpa, b);
    }

    public ushort R16(ulong gpa) => BinaryPrimitives.ReadUInt16LittleEndian(Bytes(gpa, 2));

    public uint R32(ulong gpa) => BinaryPrimitives.ReadUInt32LittleEndian(Bytes(gpa, 4));

    public byte[] Snapshot() => File.ToArray();

    /// <summary>Fails unless every byte outside <paramref name="allowed"/> (file ranges) equals <paramref name="before"/>.</summary>
    public void ShouldBeUnchangedExcept(byte[] before, params (long Offset, long Length)[] allowed)
    {
        var now = File;
        for (int i = 0; i < before.Length; i++)
        {
            if (now[i] == before[i])
            {
                continue;
            }

            bool ok = false;
            foreach (var (o, l) in allowed)
            {
                if (i >= o && i < o + l)
                {
                    ok = true;
                    break;
                }
            }

            ok.Should().BeTrue($"file byte 0x{i:x} changed from 0x{before[i]:x2} to 0x{now[i]:x2} outside the permitted ranges");
        }
    }

    /// <summary>File range of a guest range inside one region (for the permitted-change list).</summary>
    public (long Offset, long Length) Range(ulong gpa, long length) => (FileOffset(gpa), length);
}

/// <summary>One element of a buffer as the driver describes it.</summary>
internal readonly record struct Elem(ulong Addr, uint Len, bool Write = false);

/// <summary>Eventfd helpers.</summary>
internal static class EventFds
{
    public static long Drain(FileDescriptor fd) => Libc.EventFdDrain(fd.Value);
}
