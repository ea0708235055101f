using CsCheck;
using VhostCompat.Interop;
using VhostCompat.Memory;
using VhostCompat.Protocol;
using VhostCompat.Tests.Support;

namespace VhostCompat.Tests;

/// <summary>
/// Property tests for address translation over random region layouts (PROTOCOL.md §8.3;
/// HOSTILE-INPUTS B5, B6, B16). The model uses 128-bit arithmetic so it cannot wrap.
/// A range [a, a+len) is translatable iff one region r has start ≤ a &lt; start+size and
/// a+len ≤ start+size (for len = 0 this means "a lies inside a region").
/// </summary>
public class TranslationPropertyTests : IDisposable
{
    private const long FileSize = 0x10000;
    private const ulong MaxRegionSize = 0x8000;
    private const ulong MaxOffset = 0x4000;

    // All regions of all iterations map (parts of) this one memfd; every iteration maps and unmaps its own regions.
    private readonly FileDescriptor _fd = Memfd.Create(FileSize, Memfd.UniqueName("vhc-prop"));

    public void Dispose() => _fd.Dispose();

    /// <summary>Region sizes: tiny, page multiples, arbitrary.</summary>
    private static readonly Gen<ulong> GenSize = Gen.Frequency(
        (2, Gen.ULong[1, 64]),
        (2, Gen.ULong[1, 8].Select(p => p * 0x1000)),
        (3, Gen.ULong[1, MaxRegionSize]));

    private static readonly Gen<ulong> GenOffset = Gen.Frequency(
        (2, Gen.Const(0UL)),
        (1, Gen.ULong[0, 4].Select(p => p * 0x1000)),
        (2, Gen.ULong[0, MaxOffset]));

    /// <summary>Gaps between consecutive regions: adjacent, one byte, small, huge.</summary>
    private static readonly Gen<ulong> GenGap = Gen.Frequency(
        (3, Gen.Const(0UL)),
        (1, Gen.Const(1UL)),
        (2, Gen.ULong[2, 0x10000]),
        (1, Gen.ULong[0x10000, 1UL << 58]));

    /// <summary>Where the lowest region starts: 0, anywhere, or so that the highest region ends at 2^64 − 1.</summary>
    private static readonly Gen<ulong> GenBase = Gen.Frequency(
        (1, Gen.Const(0UL)),
        (2, Gen.ULong),
        (1, Gen.Const(ulong.MaxValue)));

    private sealed record Layout(MemoryRegionPayload[] Regions)
    {
        public override string ToString() => string.Join(", ", Regions.Select(r =>
            $"(gpa 0x{r.GuestPhysicalAddress:x}, size 0x{r.MemorySize:x}, ua 0x{r.UserspaceAddress:x}, off 0x{r.MmapOffset:x})"));
    }

    /// <summary>Places regions of the given sizes in the given order with the given gaps, lowest at <paramref name="start"/> if it fits.</summary>
    private static ulong[] Place(ulong[] sizes, int[] order, ulong[] gaps, ulong start)
    {
        UInt128 span = 0;
        for (int k = 0; k < order.Length; k++)
        {
            span += (k == 0 ? 0 : gaps[k]) + sizes[order[k]];
        }

        // The highest region may end at 2^64 - 1 (exclusive end), never at 2^64.
        UInt128 top = ulong.MaxValue;
        ulong lowest = (UInt128)start + span > top ? (ulong)(top - span) : start;
        var starts = new ulong[sizes.Length];
        UInt128 at = lowest;
        for (int k = 0; k < order.Length; k++)
        {
            at += k == 0 ? 0 : gaps[k];
            starts[order[k]] = (ulong)at;
            at += sizes[order[k]];
        }

        return starts;
    }

    private static readonly Gen<Layout> GenLayout =
        from n in Gen.Int[1, 6]
        from sizes in GenSize.Array[n]
        from offsets in GenOffset.Array[n]
        from gpaGaps in GenGap.Array[n]
        from uaGaps in GenGap.Array[n]
        from gpaBase in GenBase
        from uaBase in GenBase
        from gpaKeys in Gen.Int.Array[n]
        from uaKeys in Gen.Int.Array[n]
        select Build(sizes, offsets, gpaGaps, uaGaps, gpaBase, uaBase, gpaKeys, uaKeys);

    private static Layout Build(ulong[] sizes, ulong[] offsets, ulong[] gpaGaps, ulong[] uaGaps, ulong gpaBase, ulong uaBase, int[] gpaKeys, int[] uaKeys)
    {
        int n = sizes.Length;
        int[] gpaOrder = Enumerable.Range(0, n).OrderBy(i => gpaKeys[i]).ThenBy(i => i).ToArray();
        int[] uaOrder = Enumerable.Range(0, n).OrderBy(i => uaKeys[i]).ThenBy(i => i).ToArray();
        ulong[] gpas = Place(sizes, gpaOrder, gpaGaps, gpaBase);
        ulong[] uas = Place(sizes, uaOrder, uaGaps, uaBase);
        return new Layout(Enumerable.Range(0, n).Select(i => new MemoryRegionPayload(gpas[i], sizes[i], uas[i], offsets[i])).ToArray());
    }

    /// <summary>A probe: either fully random, or near a chosen region's edges.</summary>
    private readonly record struct Probe(int Region, bool NearEdge, long Delta, ulong Length, ulong RawAddress, ulong RawLength);

    private static readonly Gen<Probe> GenProbe =
        from region in Gen.Int[0, 5]
        from nearEdge in Gen.Bool
        from delta in Gen.Long[-16, (long)MaxRegionSize + 16]
        from length in Gen.Frequency((3, Gen.ULong[0, MaxRegionSize + 16]), (1, Gen.OneOfConst(0UL, 1UL, ulong.MaxValue, ulong.MaxValue - 1)))
        from rawAddress in Gen.ULong
        from rawLength in Gen.ULong
        select new Probe(region, nearEdge, delta, length, rawAddress, rawLength);

    private static ulong Start(MemoryRegionPayload r, bool userspace) => userspace ? r.UserspaceAddress : r.GuestPhysicalAddress;

    /// <summary>The index of the region that contains [a, a+len) entirely, or -1 (128-bit arithmetic, no wrap).</summary>
    private static int Model(MemoryRegionPayload[] regions, ulong a, ulong len, bool userspace)
    {
        int found = -1;
        for (int i = 0; i < regions.Length; i++)
        {
            UInt128 s = Start(regions[i], userspace);
            UInt128 e = s + regions[i].MemorySize;
            if (a >= s && a < e && (UInt128)a + len <= e)
            {
                found.Should().Be(-1, "regions of a valid layout never overlap");
                found = i;
            }
        }

        return found;
    }

    /// <summary>Boundary probes for every region and both address spaces, plus the random ones.</summary>
    private static IEnumerable<(ulong Address, ulong Length)> ProbesFor(MemoryRegionPayload[] regions, bool userspace, Probe[] random)
    {
        ulong[] lengths = [0, 1, 2, ulong.MaxValue, ulong.MaxValue - 1, 1UL << 63];
        foreach (var r in regions)
        {
            ulong s = Start(r, userspace);
            ulong e = unchecked(s + r.MemorySize); // may be... never 2^64 for a valid region
            foreach (ulong a in new[] { unchecked(s - 1), s, unchecked(s + 1), unchecked(e - 1), e, unchecked(e + 1) })
            {
                foreach (ulong len in lengths)
                {
                    yield return (a, len);
                }

                yield return (a, unchecked(e - a));
                yield return (a, unchecked(e - a + 1));
                yield return (a, unchecked(e - a - 1));
                yield return (a, r.MemorySize);
                yield return (a, unchecked(0 - a)); // a + len == 2^64
            }
        }

        foreach (var p in random)
        {
            if (p.NearEdge)
            {
                var r = regions[p.Region % regions.Length];
                yield return (unchecked(Start(r, userspace) + (ulong)p.Delta), p.Length);
            }
            else
            {
                yield return (p.RawAddress, p.RawLength);
                yield return (p.RawAddress, p.Length);
            }
        }
    }

    [Fact]
    public void TryTranslate_succeeds_iff_the_range_lies_entirely_within_one_region_and_never_throws()
    {
        Gen.Select(GenLayout, GenProbe.Array[0, 40]).Sample((layout, probes) =>
        {
            MemoryRegionPayload[] d = layout.Regions;
            foreach (var r in d)
            {
                GuestMemoryRegion.ValidateDescription(r).Should().BeNull("the generator only builds valid regions");
            }

            GuestMemoryTable.FindOverlap(d).Should().BeNull("the generator only builds disjoint layouts");

            var mapped = new List<GuestMemoryRegion>();
            try
            {
                foreach (var r in d)
                {
                    mapped.Add(GuestMemoryRegion.TryMap(r, _fd, out string error) ?? throw new InvalidOperationException(error));
                }

                foreach (var m in mapped)
                {
                    m.AddRef(); // the table takes one reference of its own
                }

                var table = new GuestMemoryTable([.. mapped]);
                try
                {
                    foreach (bool userspace in new[] { false, true })
                    {
                        foreach (var (a, len) in ProbesFor(d, userspace, probes))
                        {
                            int expected = Model(d, a, len, userspace);
                            bool ok = userspace
                                ? table.TryTranslateFrontendVirtual(a, len, out nint host)
                                : table.TryTranslateGuestPhysical(a, len, out host);

                            string what = $"{(userspace ? "VA" : "GPA")} 0x{a:x} + 0x{len:x}";
                            ok.Should().Be(expected >= 0, what);
                            if (expected >= 0)
                            {
                                host.Should().Be(mapped[expected].Base + (nint)(a - Start(d[expected], userspace)), what);
                            }
                            else
                            {
                                host.Should().Be(0, what);
                            }

                            // Per-region translation agrees with the table.
                            for (int i = 0; i < mapped.Count; i++)
                            {
                                mapped[i].TryTranslate(a, len, userspace, out _).Should().Be(i == expected, $"{what} in region {i}");
                            }

                            if (userspace && expected >= 0 && len > 0)
                            {
                                table.TryFrontendVirtualToGuestPhysical(a, out ulong gpa).Should().BeTrue(what);
                                gpa.Should().Be(d[expected].GuestPhysicalAddress + (a - d[expected].UserspaceAddress), what);
                            }
                        }
                    }
                }
                finally
                {
                    table.Release();
                }
            }
            finally
            {
                foreach (var m in mapped)
                {
                    m.Release();
                }
            }
        }, iter: 400, seed: null);
    }

    /// <summary>Small, crowded address spaces (plus the top of the space) so that overlaps are frequent.</summary>
    private static readonly Gen<MemoryRegionPayload> GenCrowdedRegion =
        from size in Gen.ULong[1, 0x40]
        from gpaLow in Gen.ULong[0, 0x100]
        from uaLow in Gen.ULong[0, 0x100]
        from gpaHigh in Gen.Bool
        from uaHigh in Gen.Bool
        select new MemoryRegionPayload(
            gpaHigh ? ulong.MaxValue - size - gpaLow : gpaLow,
            size,
            uaHigh ? ulong.MaxValue - size - uaLow : uaLow,
            0);

    [Fact]
    public void FindOverlap_reports_an_overlap_iff_two_ranges_intersect_in_either_space()
    {
        static bool Intersect(UInt128 a, UInt128 aLen, UInt128 b, UInt128 bLen) => a < b + bLen && b < a + aLen;

        GenCrowdedRegion.Array[0, 8].Sample(regions =>
        {
            bool expected = false;
            for (int i = 0; i < regions.Length; i++)
            {
                for (int j = i + 1; j < regions.Length; j++)
                {
                    var a = regions[i];
                    var b = regions[j];
                    expected |= Intersect(a.GuestPhysicalAddress, a.MemorySize, b.GuestPhysicalAddress, b.MemorySize)
                        || Intersect(a.UserspaceAddress, a.MemorySize, b.UserspaceAddress, b.MemorySize);
                }
            }

            return (GuestMemoryTable.FindOverlap(regions) is not null) == expected;
        }, iter: 5000);
    }

    [Fact]
    public void ValidateDescription_accepts_iff_no_range_reaches_2_pow_64_and_never_throws()
    {
        Gen<ulong> edgy = Gen.Frequency(
            (2, Gen.ULong),
            (1, Gen.ULong[0, 0x10000]),
            (1, Gen.ULong[0, 0x10000].Select(d => ulong.MaxValue - d)),
            (1, Gen.ULong[0, 0x10000].Select(d => (ulong)long.MaxValue - 0x8000 + d)));

        Gen.Select(edgy, edgy, edgy, edgy).Sample((gpa, size, ua, off) =>
        {
            UInt128 limit = (UInt128)ulong.MaxValue; // exclusive end may be at most 2^64 - 1
            bool expected = size != 0
                && (UInt128)gpa + size <= limit
                && (UInt128)ua + size <= limit
                && (UInt128)off + size <= long.MaxValue;
            return (GuestMemoryRegion.ValidateDescription(new MemoryRegionPayload(gpa, size, ua, off)) is null) == expected;
        }, iter: 20000);
    }
}
