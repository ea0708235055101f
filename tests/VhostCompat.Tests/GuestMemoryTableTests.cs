using VhostCompat.Interop;
using VhostCompat.Memory;
using VhostCompat.Protocol;
using VhostCompat.Tests.Support;

namespace VhostCompat.Tests;

/// <summary>Overlap checks, multi-region translation and table lifetime (PROTOCOL.md §8; HOSTILE-INPUTS B6, B15, B16).</summary>
public class GuestMemoryTableTests
{
    private static MemoryRegionPayload R(ulong gpa, ulong size, ulong ua) => new(gpa, size, ua, 0);

    [Fact]
    public void FindOverlap_accepts_an_empty_or_single_region_list()
    {
        GuestMemoryTable.FindOverlap([]).Should().BeNull();
        GuestMemoryTable.FindOverlap([R(0, 0x1000, 0x1000)]).Should().BeNull();
    }

    [Fact]
    public void FindOverlap_rejects_guest_ranges_that_share_one_byte()
    {
        var a = R(0x1000, 0x1000, 0x10_0000);
        var b = R(0x1FFF, 0x1000, 0x20_0000);

        GuestMemoryTable.FindOverlap([a, b]).Should().NotBeNull().And.Contain("guest physical");
        GuestMemoryTable.FindOverlap([b, a]).Should().NotBeNull().And.Contain("guest physical");
    }

    [Fact]
    public void FindOverlap_rejects_a_guest_range_contained_in_another()
    {
        GuestMemoryTable.FindOverlap([R(0, 0x10_0000, 0x100_0000), R(0x8000, 0x1000, 0x200_0000)])
            .Should().NotBeNull().And.Contain("guest physical");
    }

    [Fact]
    public void FindOverlap_rejects_identical_regions()
    {
        GuestMemoryTable.FindOverlap([R(0x1000, 0x1000, 0x10_0000), R(0x1000, 0x1000, 0x10_0000)]).Should().NotBeNull();
    }

    [Fact]
    public void FindOverlap_rejects_distinct_guest_ranges_whose_frontend_ranges_overlap()
    {
        var a = R(0x0000, 0x2000, 0x7F00_0000_0000);
        var b = R(0x10_0000, 0x2000, 0x7F00_0000_1FFF);

        GuestMemoryTable.FindOverlap([a, b]).Should().NotBeNull("B6: ring translation would be ambiguous").And.Contain("frontend");
        GuestMemoryTable.FindOverlap([b, a]).Should().NotBeNull().And.Contain("frontend");
    }

    [Fact]
    public void FindOverlap_accepts_regions_adjacent_in_both_address_spaces()
    {
        var a = R(0x0000, 0x2000, 0x7F00_0000_0000);
        var b = R(0x2000, 0x1000, 0x7F00_0000_2000);
        var c = R(0x3000, 0x1000, 0x7EFF_FFFF_F000); // adjacent below a in frontend space

        GuestMemoryTable.FindOverlap([a, b, c]).Should().BeNull();
        GuestMemoryTable.FindOverlap([c, b, a]).Should().BeNull();
    }

    [Fact]
    public void FindOverlap_does_not_wrap_for_a_region_ending_at_the_top_of_the_address_space()
    {
        var top = R(0xFFFF_FFFF_FFFF_EFFF, 0x1000, 0xFFFF_FFFF_FFFF_EFFF);
        var bottom = R(0, 0x1000, 0);

        GuestMemoryTable.FindOverlap([top, bottom]).Should().BeNull();
        GuestMemoryTable.FindOverlap([bottom, top]).Should().BeNull();
        GuestMemoryTable.FindOverlap([top, R(0xFFFF_FFFF_FFFF_EFFE, 1, 0x1_0000)]).Should().BeNull();
        GuestMemoryTable.FindOverlap([top, R(0xFFFF_FFFF_FFFF_EFFE, 2, 0x1_0000)]).Should().NotBeNull();
    }

    [Fact]
    public void FindOverlap_names_the_overlapping_pair()
    {
        GuestMemoryTable.FindOverlap([R(0, 0x1000, 0x10_0000), R(0x1000, 0x1000, 0x20_0000), R(0x1800, 0x1000, 0x30_0000)])
            .Should().Contain("1 and 2");
    }

    // ---- tables of real mappings ----

    private sealed class MappedTable : IDisposable
    {
        public MappedTable(string name, params MemoryRegionPayload[] regions)
        {
            ulong fileSize = regions.Max(r => r.MmapOffset + r.MemorySize);
            Fd = Memfd.Create((long)fileSize, name);
            var mapped = regions.Select(d => GuestMemoryRegion.TryMap(d, Fd, out string e) ?? throw new InvalidOperationException(e)).ToArray();
            Table = new GuestMemoryTable(mapped);
        }

        public FileDescriptor Fd { get; }

        public GuestMemoryTable Table { get; }

        public void Dispose()
        {
            Table.Release();
            Fd.Dispose();
        }
    }

    [Fact]
    public void Table_translates_in_both_regions_and_rejects_a_range_straddling_two_guest_adjacent_regions()
    {
        // Adjacent in GPA, backed by different parts of the file, so host memory is not contiguous.
        using var t = new MappedTable(
            Memfd.UniqueName("vhc-table"),
            new MemoryRegionPayload(0x0000, 0x2000, 0x7F00_0000_0000, 0x3000),
            new MemoryRegionPayload(0x2000, 0x1000, 0x7E00_0000_0000, 0x0000));
        GuestMemoryTable table = t.Table;

        table.TryTranslateGuestPhysical(0x1FFF, 1, out nint endOfA).Should().BeTrue();
        endOfA.Should().Be(table.Regions[0].Base + 0x1FFF);
        table.TryTranslateGuestPhysical(0x2000, 0x1000, out nint startOfB).Should().BeTrue();
        startOfB.Should().Be(table.Regions[1].Base);

        table.TryTranslateGuestPhysical(0x1FFF, 2, out _).Should().BeFalse("B16: a buffer crossing A→B must be split by the caller");
        table.TryTranslateGuestPhysical(0x3000, 1, out _).Should().BeFalse("hole after the last region");
        table.TryTranslateGuestPhysical(0x2FFF, 1, out _).Should().BeTrue("last byte of memory");

        table.TryTranslateFrontendVirtual(0x7F00_0000_1FFF, 1, out nint va).Should().BeTrue();
        va.Should().Be(endOfA);
        table.TryTranslateFrontendVirtual(0x7E00_0000_0FFF, 2, out _).Should().BeFalse();
    }

    [Fact]
    public void Table_converts_frontend_virtual_to_guest_physical_inside_regions_only()
    {
        using var t = new MappedTable(
            Memfd.UniqueName("vhc-table"),
            new MemoryRegionPayload(0x1_0000, 0x2000, 0x7F00_0000_0000, 0),
            new MemoryRegionPayload(0x8_0000, 0x1000, 0x7E00_0000_0000, 0x2000));

        t.Table.TryFrontendVirtualToGuestPhysical(0x7F00_0000_0000, out ulong gpa).Should().BeTrue();
        gpa.Should().Be(0x1_0000);
        t.Table.TryFrontendVirtualToGuestPhysical(0x7F00_0000_1FFF, out gpa).Should().BeTrue();
        gpa.Should().Be(0x1_1FFF);
        t.Table.TryFrontendVirtualToGuestPhysical(0x7E00_0000_0FFF, out gpa).Should().BeTrue();
        gpa.Should().Be(0x8_0FFF);
        t.Table.TryFrontendVirtualToGuestPhysical(0x7F00_0000_2000, out _).Should().BeFalse();
        t.Table.TryFrontendVirtualToGuestPhysical(0x7EFF_FFFF_FFFF, out _).Should().BeFalse();
    }

    [Fact]
    public void Empty_table_translates_nothing_and_survives_release()
    {
        GuestMemoryTable.Empty.TryTranslateGuestPhysical(0, 1, out _).Should().BeFalse();
        GuestMemoryTable.Empty.TryTranslateFrontendVirtual(0, 1, out _).Should().BeFalse();
        GuestMemoryTable.Empty.Release();
        GuestMemoryTable.Empty.TryAcquire().Should().BeTrue();
        GuestMemoryTable.Empty.Count.Should().Be(0);
    }

    [Fact]
    public void Table_unmaps_its_regions_only_after_the_last_lease_is_returned()
    {
        string name = Memfd.UniqueName("vhc-lease");
        using FileDescriptor fd = Memfd.Create(0x2000, name);
        var r0 = GuestMemoryRegion.TryMap(new MemoryRegionPayload(0, 0x1000, 0x10_0000, 0), fd, out _)!;
        var r1 = GuestMemoryRegion.TryMap(new MemoryRegionPayload(0x1000, 0x1000, 0x20_0000, 0x1000), fd, out _)!;
        var table = new GuestMemoryTable([r0, r1]);
        Memfd.MapsLinesMentioning(name).Should().Be(2);

        table.TryAcquire().Should().BeTrue();
        table.Release(); // the owner's reference
        Memfd.MapsLinesMentioning(name).Should().Be(2, "a worker still holds a lease");

        table.Release(); // the lease
        Memfd.MapsLinesMentioning(name).Should().Be(0);
        table.TryAcquire().Should().BeFalse("a fully released table cannot be leased again");
    }

    [Fact]
    public void Region_shared_by_two_tables_survives_release_of_the_first()
    {
        string name = Memfd.UniqueName("vhc-shared");
        using FileDescriptor fd = Memfd.Create(0x1000, name);
        var r = GuestMemoryRegion.TryMap(new MemoryRegionPayload(0, 0x1000, 0x10_0000, 0), fd, out _)!;
        var oldTable = new GuestMemoryTable([r]);
        r.AddRef();
        var newTable = new GuestMemoryTable([r]);

        oldTable.Release();
        Memfd.MapsLinesMentioning(name).Should().Be(1);
        newTable.TryTranslateGuestPhysical(0xFFF, 1, out nint p).Should().BeTrue();
        Memfd.WriteByte(p, 1);

        newTable.Release();
        Memfd.MapsLinesMentioning(name).Should().Be(0);
    }
}
