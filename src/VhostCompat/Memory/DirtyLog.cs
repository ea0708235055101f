using VhostCompat.Interop;
using VhostCompat.Protocol;

namespace VhostCompat.Memory;

/// <summary>
/// The dirty-page bitmap shared with the frontend for live migration (SET_LOG_BASE with
/// LOG_SHMFD): one bit per 4 KiB guest-physical page, set with an atomic OR on the aligned 32-bit
/// word that holds it (QEMU clears it concurrently with atomic exchanges). Reference-counted like
/// a memory table, so a worker never writes into a log that is being replaced.
/// </summary>
internal sealed class DirtyLog
{
    public const int PageShift = 12;
    private readonly MemoryMapping _mapping;
    private readonly nint _base;
    private RefCount _references = new();

    private DirtyLog(MemoryMapping mapping, ulong offset, ulong size)
    {
        _mapping = mapping;
        _base = mapping.Address + (nint)offset;
        Size = size;
    }

    /// <summary>Bytes of bitmap.</summary>
    public ulong Size { get; }

    /// <summary>Number of pages the bitmap covers.</summary>
    public ulong Pages => Size * 8;

    /// <summary>Maps the log; checks the fd and that the bitmap covers every page of <paramref name="table"/>.</summary>
    public static DirtyLog? TryMap(LogDescriptionPayload d, FileDescriptor fd, GuestMemoryTable table, out string error) => TryMap(d, fd, table, requireSealed: false, out error);

    /// <inheritdoc cref="TryMap(LogDescriptionPayload, FileDescriptor, GuestMemoryTable, out string)"/>
    public static DirtyLog? TryMap(LogDescriptionPayload d, FileDescriptor fd, GuestMemoryTable table, bool requireSealed, out string error)
    {
        error = string.Empty;
        if (d.MmapSize == 0 || d.MmapSize > (1UL << 40))
        {
            error = $"log size {d.MmapSize} outside 1..2^40";
            return null;
        }

        if (d.MmapOffset > ulong.MaxValue - d.MmapSize || d.MmapOffset + d.MmapSize > long.MaxValue)
        {
            error = $"log offset 0x{d.MmapOffset:x} + size {d.MmapSize} overflows";
            return null;
        }

        ulong highest = 0;
        foreach (var r in table.Regions)
        {
            highest = Math.Max(highest, r.GuestPhysicalAddress + r.Size);
        }

        ulong needed = ((highest >> PageShift) + 7) / 8;
        if (d.MmapSize < needed)
        {
            error = $"log of {d.MmapSize} bytes cannot cover guest memory up to 0x{highest:x} ({needed} bytes needed)";
            return null;
        }

        MemoryMapping? mapping = MemoryMapping.TryMapFrontendFile(fd, d.MmapOffset + d.MmapSize, "log", requireSealed, out error);
        if (mapping is null)
        {
            return null;
        }

        return new DirtyLog(mapping, d.MmapOffset, d.MmapSize);
    }

    // Marks in progress (TryMark); Retire waits for them to drain after setting _retired.
    private int _writers;
    private volatile bool _retired;

    /// <summary>
    /// Marks [gpa, gpa+length) unless the log has been retired (replaced): returns false then, and the caller marks
    /// the log now current instead. A mark that has started when <see cref="Retire"/> is called finishes before it returns.
    /// </summary>
    public bool TryMark(ulong gpa, ulong length)
    {
        Interlocked.Increment(ref _writers);
        try
        {
            if (_retired)
            {
                return false;
            }

            Mark(gpa, length);
            return true;
        }
        finally
        {
            Interlocked.Decrement(ref _writers);
        }
    }

    /// <summary>
    /// The frontend has replaced this log: no mark may land in it any more. Call after the replacement is current for
    /// every writer; waits (bounded) until marks already inside <see cref="TryMark"/> have finished.
    /// </summary>
    public void Retire()
    {
        _retired = true;
        Interlocked.MemoryBarrier();
        if (!SpinWait.SpinUntil(() => Volatile.Read(ref _writers) == 0, TimeSpan.FromSeconds(5)))
        {
            throw new IOException("a dirty-log mark did not finish within 5 s of the log's replacement");
        }
    }

    // Pages written beyond the bitmap (memory added while logging, before the frontend sends a larger log): the
    // smallest and largest such page, carried into the next log by CarryOverflowTo. Empty: first > last.
    private long _overflowFirst = long.MaxValue;
    private long _overflowLast = -1;

    /// <summary>The range of pages written beyond this bitmap, or null when every write fitted.</summary>
    public (ulong First, ulong Last)? Overflow
    {
        get
        {
            long first = Interlocked.Read(ref _overflowFirst), last = Interlocked.Read(ref _overflowLast);
            return first <= last ? ((ulong)first, (ulong)last) : null;
        }
    }

    /// <summary>
    /// Marks in <paramref name="next"/> every page this log could not hold (conservatively, the whole range between
    /// the first and last such page). Called when <paramref name="next"/> replaces this log, after this one is retired.
    /// </summary>
    public void CarryOverflowTo(DirtyLog next)
    {
        if (Overflow is { } range)
        {
            next.MarkPages(range.First, range.Last);
        }
    }

    /// <summary>
    /// Marks every page touched by [gpa, gpa+length). Pages beyond the bitmap (the memory table grew while logging and
    /// the frontend has not sent a larger log yet; QEMU sends it right after the table) are remembered as
    /// <see cref="Overflow"/> and carried into the replacement, never dropped.
    /// </summary>
    public void Mark(ulong gpa, ulong length)
    {
        if (length == 0)
        {
            return;
        }

        ulong first = gpa >> PageShift;
        ulong last = (gpa + length - 1 < gpa ? ulong.MaxValue : gpa + length - 1) >> PageShift;
        MarkPages(first, last);
    }

    private unsafe void MarkPages(ulong first, ulong last)
    {
        if (last >= Pages)
        {
            RecordOverflow(Math.Max(first, Pages), last);
        }

        for (ulong page = first; page <= last && page < Pages; page++)
        {
            // OR the bit into the aligned 32-bit word holding byte page/8 (little-endian: byte k of the
            // word is bits 8k..8k+7). The word may start before the log area when mmap_offset is not a
            // multiple of 4; it is still inside the page-granular mapping and only our bit changes.
            nint b = _base + (nint)(page / 8);
            nint aligned = b & ~(nint)3;
            int shift = (int)((b - aligned) * 8) + (int)(page % 8);
            Interlocked.Or(ref *(int*)aligned, 1 << shift);
        }
    }

    private void RecordOverflow(ulong first, ulong last)
    {
        long f = (long)Math.Min(first, long.MaxValue), l = (long)Math.Min(last, long.MaxValue);
        long seen;
        while (f < (seen = Interlocked.Read(ref _overflowFirst)) && Interlocked.CompareExchange(ref _overflowFirst, f, seen) != seen)
        {
        }

        while (l > (seen = Interlocked.Read(ref _overflowLast)) && Interlocked.CompareExchange(ref _overflowLast, l, seen) != seen)
        {
        }
    }

    public void Release()
    {
        if (_references.Release())
        {
            _mapping.Dispose();
        }
    }
}
