namespace VhostCompat.Fuzz;

/// <summary>
/// Memory standing in for one queue's region of the shared inflight buffer, placed so that it ends
/// exactly at an inaccessible page (an overrun faults) and preceded by canary bytes and another
/// inaccessible page.
/// </summary>
internal sealed unsafe class InflightRegion
{
    private const int Page = 0x1000;
    private const int Usable = 3 * Page; // 32 + 32·259 bytes (the largest packed capacity the target asks for), rounded up
    private const byte Canary = 0x5C;
    private readonly nint _base;
    private int _length;

    public InflightRegion()
    {
        _base = Native.Anonymous(Usable + (2 * Page));
        Native.Protect(_base, Page, Native.PROT_NONE);
        Native.Protect(_base + Page + Usable, Page, Native.PROT_NONE);
    }

    /// <summary>Address of the region loaded last.</summary>
    public nint Address => _base + Page + Usable - _length;

    private Span<byte> Usable_ => new((void*)(_base + Page), Usable);

    public void Load(ReadOnlySpan<byte> content, int length)
    {
        if (length > Usable)
        {
            throw new ArgumentOutOfRangeException(nameof(length));
        }

        _length = length;
        var all = Usable_;
        all[..(Usable - length)].Fill(Canary);
        var region = all[(Usable - length)..];
        region.Clear();
        content[..Math.Min(content.Length, length)].CopyTo(region);
    }

    public byte[] Snapshot() => Usable_[(Usable - _length)..].ToArray();

    public void CheckGuards()
    {
        var before = Usable_[..(Usable - _length)];
        if (before.IndexOfAnyExcept(Canary) is int i and >= 0)
        {
            throw new FuzzFailureException($"byte {before.Length - i} before the inflight region was written");
        }
    }
}
