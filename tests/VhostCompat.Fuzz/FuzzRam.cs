using VhostCompat.Interop;
using VhostCompat.Memory;
using VhostCompat.Protocol;

namespace VhostCompat.Fuzz;

/// <summary>
/// Guest memory for the ring targets: one memfd mapped by the SDK itself (through
/// <see cref="GuestMemoryRegion.TryMap"/>, exactly as SET_MEM_TABLE does) and by the fuzzer
/// through a second view. Two regions that are adjacent in guest physical space but not in the
/// file: A = GPA 0x10000..0x14000 at file offset 0x1000, B = GPA 0x14000..0x15000 at file offset
/// 0x6000. The file bytes 0..0x1000 and 0x5000..0x6000 belong to no region but lie inside the
/// SDK's own mappings (it maps from offset 0), so an out-of-bounds write shows up as a changed
/// canary rather than going unnoticed; those two pages are also made inaccessible in the SDK's
/// mappings, so a stray read faults (SIGSEGV) instead of returning canary bytes.
/// </summary>
internal sealed unsafe class FuzzRam : IDisposable
{
    public const ulong Gpa = 0x10000;
    public const int Size = 0x5000;
    public const ulong UaDelta = 0x7F00_0000_0000;
    public const byte Canary = 0xC5;
    private const int FileSize = 0x8000;

    private static readonly (int Offset, int Length)[] Guards = [(0, 0x1000), (0x5000, 0x1000), (0x7000, 0x1000)];
    private readonly FileDescriptor _fd;
    private readonly MemoryMapping _view;

    public FuzzRam()
    {
        _fd = FileDescriptor.CreateMemfd("vhc-fuzz-ram", FileSize);
        _view = MemoryMapping.TryMap(_fd.Value, FileSize, out int errno) ?? throw new IOException(Libc.ErrorText("mmap", errno));
        var a = GuestMemoryRegion.TryMap(new MemoryRegionPayload(Gpa, 0x4000, Gpa + UaDelta, 0x1000), _fd, out string e1)
            ?? throw new InvalidOperationException(e1);
        var b = GuestMemoryRegion.TryMap(new MemoryRegionPayload(Gpa + 0x4000, 0x1000, Gpa + 0x4000 + UaDelta, 0x6000), _fd, out string e2)
            ?? throw new InvalidOperationException(e2);
        Table = new GuestMemoryTable([a, b]);
        File.Fill(Canary);

        // The page before each region is inside the SDK's mapping but belongs to no region.
        Native.Protect(a.Base - 0x1000, 0x1000, Native.PROT_NONE);
        Native.Protect(b.Base - 0x1000, 0x1000, Native.PROT_NONE);
    }

    public GuestMemoryTable Table { get; }

    private Span<byte> File => new((void*)_view.Address, FileSize);

    /// <summary>Guest memory as the driver sees it: region A then region B (contiguous in GPA order).</summary>
    public void Load(ReadOnlySpan<byte> image)
    {
        Span<byte> a = File.Slice(0x1000, 0x4000);
        Span<byte> b = File.Slice(0x6000, 0x1000);
        int n = Math.Min(image.Length, Size);
        var src = image[..n];
        a.Clear();
        b.Clear();
        src[..Math.Min(n, 0x4000)].CopyTo(a);
        if (n > 0x4000)
        {
            src[0x4000..].CopyTo(b);
        }
    }

    /// <summary>The current guest memory image (the inverse of <see cref="Load"/>).</summary>
    public byte[] Image() => [.. File.Slice(0x1000, 0x4000), .. File.Slice(0x6000, 0x1000)];

    /// <summary>Throws <see cref="FuzzFailureException"/> if any byte outside guest memory changed.</summary>
    public void CheckGuards()
    {
        foreach (var (offset, length) in Guards)
        {
            var g = File.Slice(offset, length);
            if (g.IndexOfAnyExcept(Canary) is int i and >= 0)
            {
                throw new FuzzFailureException($"file byte 0x{offset + i:x} outside guest memory was written (0x{g[i]:x2})");
            }
        }
    }

    public static ulong Ua(ulong gpa) => gpa + UaDelta;

    public void Dispose()
    {
        Table.Release();
        _view.Dispose();
        _fd.Dispose();
    }
}
