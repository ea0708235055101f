using System.Runtime.CompilerServices;

namespace VhostCompat.Memory;

/// <summary>
/// An immutable set of mapped regions. Replacing the table (SET_MEM_TABLE, ADD/REM_MEM_REG)
/// builds a new one; the old one is released, and its mappings disappear only when every lease
/// taken by a worker has been returned, so a worker can never use a mapping being replaced.
/// </summary>
internal sealed class GuestMemoryTable
{
    private readonly GuestMemoryRegion[] _regions;
    // The guest-physical side of every region as plain values, for the per-buffer translation of the data path.
    private readonly GuestRange[] _guest;
    private RefCount _references = new();

    public static readonly GuestMemoryTable Empty = new([]);

    /// <summary>Takes ownership of one reference to each region.</summary>
    public GuestMemoryTable(GuestMemoryRegion[] regions)
    {
        _regions = regions;
        _guest = [.. regions.Select(r => new GuestRange(r.GuestPhysicalAddress, r.Size, r.Base))];
    }

    private readonly record struct GuestRange(ulong Start, ulong Size, nint Base);

    public IReadOnlyList<GuestMemoryRegion> Regions => _regions;

    public int Count => _regions.Length;

    /// <summary>Takes a lease; returns false if the table is already fully released.</summary>
    public bool TryAcquire() => _references.TryAcquire();

    public void Release()
    {
        if (ReferenceEquals(this, Empty))
        {
            return;
        }

        if (_references.Release())
        {
            foreach (var r in _regions)
            {
                r.Release();
            }
        }
    }

    /// <summary>Checks that neither guest-physical nor frontend-virtual ranges of any two regions overlap.</summary>
    public static string? FindOverlap(IReadOnlyList<Protocol.MemoryRegionPayload> regions)
    {
        for (int i = 0; i < regions.Count; i++)
        {
            for (int j = i + 1; j < regions.Count; j++)
            {
                var a = regions[i];
                var b = regions[j];
                if (Overlaps(a.GuestPhysicalAddress, a.MemorySize, b.GuestPhysicalAddress, b.MemorySize))
                {
                    return $"regions {i} and {j} overlap in guest physical space";
                }

                if (Overlaps(a.UserspaceAddress, a.MemorySize, b.UserspaceAddress, b.MemorySize))
                {
                    return $"regions {i} and {j} overlap in frontend address space";
                }
            }
        }

        return null;
    }

    // Both ranges are known not to wrap (validated first).
    private static bool Overlaps(ulong a, ulong aLen, ulong b, ulong bLen) => a < b + bLen && b < a + aLen;

    /// <summary>Translates a guest physical range that lies entirely in one region (the per-buffer step of every ring walk).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryTranslateGuestPhysical(ulong gpa, ulong length, out nint host)
    {
        GuestRange[] ranges = _guest;
        int hint = _lastGuestHit;
        if ((uint)hint < (uint)ranges.Length)
        {
            ref readonly GuestRange r = ref ranges[hint];
            ulong offset = gpa - r.Start; // wraps to a huge value below the region
            if (offset < r.Size && length <= r.Size - offset)
            {
                host = r.Base + (nint)offset;
                return true;
            }
        }

        return TryTranslateGuestPhysicalScan(gpa, length, out host);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool TryTranslateGuestPhysicalScan(ulong gpa, ulong length, out nint host)
    {
        GuestRange[] ranges = _guest;
        for (int i = 0; i < ranges.Length; i++)
        {
            ref readonly GuestRange r = ref ranges[i];
            ulong offset = gpa - r.Start;
            if (offset < r.Size && length <= r.Size - offset)
            {
                _lastGuestHit = i;
                host = r.Base + (nint)offset;
                return true;
            }
        }

        host = 0;
        return false;
    }

    // As _lastHit, for guest-physical translation.
    private int _lastGuestHit;

    /// <summary>Translates a frontend virtual range (ring addresses of SET_VRING_ADDR) that lies entirely in one region.</summary>
    public bool TryTranslateFrontendVirtual(ulong address, ulong length, out nint host) => TryTranslate(address, length, true, out host);

    // Index of the region that matched last: guests reuse a few regions, so it usually hits first.
    // A benign race between workers sharing the table only costs a longer search.
    private int _lastHit;

    private bool TryTranslate(ulong address, ulong length, bool userspace, out nint host)
    {
        GuestMemoryRegion[] regions = _regions;
        int hint = _lastHit;
        if ((uint)hint < (uint)regions.Length && regions[hint].TryTranslate(address, length, userspace, out host))
        {
            return true;
        }

        for (int i = 0; i < regions.Length; i++)
        {
            if (regions[i].TryTranslate(address, length, userspace, out host))
            {
                _lastHit = i;
                return true;
            }
        }

        host = 0;
        return false;
    }

    /// <summary>
    /// Translates a guest physical range that may span adjacent regions, calling <paramref name="segment"/>
    /// for each piece in order. Returns false (after possibly some calls) if any byte is unmapped or the
    /// range wraps; callers treat that as a guest error.
    /// </summary>
    public bool TryTranslateGuestPhysicalPieces<TState>(ulong gpa, ulong length, ref TState state, SegmentSink<TState> segment)
        where TState : allows ref struct
    {
        if (length == 0)
        {
            return true;
        }

        if (gpa > ulong.MaxValue - (length - 1))
        {
            return false;
        }

        while (length > 0)
        {
            GuestMemoryRegion? region = FindGuestPhysical(gpa);
            if (region is null)
            {
                return false;
            }

            ulong offset = gpa - region.GuestPhysicalAddress;
            ulong piece = Math.Min(length, region.Size - offset);
            if (!segment(ref state, region.Base + (nint)offset, piece))
            {
                return false;
            }

            gpa += piece;
            length -= piece;
        }

        return true;
    }

    /// <summary>Receives one translated piece; return false to abort.</summary>
    public delegate bool SegmentSink<TState>(ref TState state, nint host, ulong length)
        where TState : allows ref struct;

    private GuestMemoryRegion? FindGuestPhysical(ulong gpa)
    {
        foreach (var r in _regions)
        {
            if (gpa >= r.GuestPhysicalAddress && gpa - r.GuestPhysicalAddress < r.Size)
            {
                return r;
            }
        }

        return null;
    }

    /// <summary>Converts a frontend virtual address to a guest physical one (used for dirty logging).</summary>
    public bool TryFrontendVirtualToGuestPhysical(ulong address, out ulong gpa)
    {
        foreach (var r in _regions)
        {
            if (address >= r.UserspaceAddress && address - r.UserspaceAddress < r.Size)
            {
                gpa = r.GuestPhysicalAddress + (address - r.UserspaceAddress);
                return true;
            }
        }

        gpa = 0;
        return false;
    }
}
