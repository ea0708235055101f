using VhostCompat.Interop;
using VhostCompat.Memory;
using VhostCompat.Protocol;
using VhostCompat.Tests.Support;

namespace VhostCompat.Tests;

/// <summary>Region description checks and real memfd mappings (PROTOCOL.md §8; HOSTILE-INPUTS B4, B5, B9, B16).</summary>
public class GuestMemoryRegionTests
{
    private const ulong Page = 0x1000;

    // ---- ValidateDescription ----

    [Fact]
    public void ValidateDescription_rejects_a_zero_size_region()
    {
        GuestMemoryRegion.ValidateDescription(new MemoryRegionPayload(0x1000, 0, 0x7F00_0000_0000, 0))
            .Should().NotBeNull().And.Contain("size");
    }

    [Fact]
    public void ValidateDescription_accepts_an_ordinary_region()
    {
        GuestMemoryRegion.ValidateDescription(new MemoryRegionPayload(0, 0x8000_0000, 0x7F00_0000_0000, 0)).Should().BeNull();
    }

    [Fact]
    public void ValidateDescription_rejects_a_guest_range_ending_at_2_pow_64()
    {
        GuestMemoryRegion.ValidateDescription(new MemoryRegionPayload(0xFFFF_FFFF_FFFF_F000, 0x1000, 0x1000, 0))
            .Should().NotBeNull("gpa + size = 2^64 wraps to 0").And.Contain("guest physical");
    }

    [Fact]
    public void ValidateDescription_accepts_a_guest_range_ending_at_the_last_address()
    {
        GuestMemoryRegion.ValidateDescription(new MemoryRegionPayload(0xFFFF_FFFF_FFFF_EFFF, 0x1000, 0x1000, 0))
            .Should().BeNull("gpa + size = 2^64 - 1 does not wrap");
    }

    [Fact]
    public void ValidateDescription_rejects_a_frontend_range_ending_at_2_pow_64()
    {
        GuestMemoryRegion.ValidateDescription(new MemoryRegionPayload(0x1000, 0x1000, 0xFFFF_FFFF_FFFF_F000, 0))
            .Should().NotBeNull().And.Contain("frontend");
        GuestMemoryRegion.ValidateDescription(new MemoryRegionPayload(0x1000, 0x1000, 0xFFFF_FFFF_FFFF_EFFF, 0))
            .Should().BeNull();
    }

    [Theory]
    [InlineData(0xFFFF_FFFF_FFFF_F000UL, 0x1000UL)]
    [InlineData(0xFFFF_FFFF_FFFF_FFFFUL, 1UL)]
    [InlineData(1UL, 0xFFFF_FFFF_FFFF_FFFFUL)]
    public void ValidateDescription_rejects_an_mmap_offset_that_wraps(ulong offset, ulong size)
    {
        GuestMemoryRegion.ValidateDescription(new MemoryRegionPayload(0, size, 0, offset)).Should().NotBeNull();
    }

    [Fact]
    public void ValidateDescription_rejects_a_file_end_beyond_the_largest_file_offset()
    {
        ulong max = long.MaxValue;
        GuestMemoryRegion.ValidateDescription(new MemoryRegionPayload(0, 0x1000, 0, max - 0x1000)).Should().BeNull();
        GuestMemoryRegion.ValidateDescription(new MemoryRegionPayload(0, 0x1000, 0, max - 0x1000 + 1)).Should().NotBeNull();
        GuestMemoryRegion.ValidateDescription(new MemoryRegionPayload(0, 0x1000, 0, 0xFFFF_FFFF_FFFF_EFFF)).Should().NotBeNull();
    }

    [Theory]
    [InlineData(1UL, 0UL)]  // gpa wraps
    [InlineData(0UL, 1UL)]  // user address wraps
    public void ValidateDescription_rejects_a_size_of_2_pow_64_minus_1_that_wraps(ulong gpa, ulong ua)
    {
        GuestMemoryRegion.ValidateDescription(new MemoryRegionPayload(gpa, ulong.MaxValue, ua, 0)).Should().NotBeNull();
    }

    // ---- TryMap ----

    [Fact]
    public void TryMap_rejects_a_file_smaller_than_the_region()
    {
        using FileDescriptor fd = Memfd.Create(0x2000);

        GuestMemoryRegion? region = GuestMemoryRegion.TryMap(new MemoryRegionPayload(0, 0x3000, 0x7F00_0000_0000, 0), fd, out string error);

        region.Should().BeNull();
        error.Should().Contain("12288").And.Contain("8192");
    }

    [Fact]
    public void TryMap_rejects_a_region_whose_mmap_offset_runs_past_the_end_of_the_file()
    {
        using FileDescriptor fd = Memfd.Create(0x2000);

        GuestMemoryRegion.TryMap(new MemoryRegionPayload(0, 0x2000, 0x7F00_0000_0000, 0x1000), fd, out string error).Should().BeNull();
        error.Should().NotBeEmpty();
        GuestMemoryRegion.TryMap(new MemoryRegionPayload(0, 0x1001, 0x7F00_0000_0000, 0x1000), fd, out error).Should().BeNull();
        error.Should().NotBeEmpty();
    }

    [Fact]
    public void TryMap_rejects_an_invalid_description_before_looking_at_the_fd()
    {
        using FileDescriptor fd = FileDescriptor.CreateEventFd();

        GuestMemoryRegion.TryMap(new MemoryRegionPayload(0, 0, 0, 0), fd, out string error).Should().BeNull();

        error.Should().Contain("size is 0");
    }

    [Fact]
    public void TryMap_rejects_an_eventfd()
    {
        using FileDescriptor fd = FileDescriptor.CreateEventFd();

        GuestMemoryRegion? region = GuestMemoryRegion.TryMap(new MemoryRegionPayload(0, 0x1000, 0x7F00_0000_0000, 0), fd, out string error);

        region.Should().BeNull();
        error.Should().Contain("not a regular");
    }

    [Fact]
    public void TryMap_rejects_a_socket()
    {
        (int a, int b) = Libc.SocketPair();
        using var fa = new FileDescriptor(a);
        using var fb = new FileDescriptor(b);

        GuestMemoryRegion.TryMap(new MemoryRegionPayload(0, 0x1000, 0x7F00_0000_0000, 0), fa, out string error).Should().BeNull();

        error.Should().Contain("not a regular");
    }

    [Fact]
    public void TryMap_rejects_dev_null()
    {
        using FileDescriptor fd = Memfd.OpenReadOnly("/dev/null");

        GuestMemoryRegion.TryMap(new MemoryRegionPayload(0, 0x1000, 0x7F00_0000_0000, 0), fd, out string error).Should().BeNull();

        error.Should().Contain("not a regular");
    }

    [Fact]
    public void TryMap_rejects_a_read_only_regular_file_with_the_errno_in_the_message()
    {
        string path = Path.Combine(Path.GetTempPath(), Memfd.UniqueName("vhc-ro"));
        File.WriteAllBytes(path, new byte[0x2000]);
        try
        {
            using FileDescriptor fd = Memfd.OpenReadOnly(path);

            GuestMemoryRegion.TryMap(new MemoryRegionPayload(0, 0x2000, 0x7F00_0000_0000, 0), fd, out string error).Should().BeNull();

            error.Should().Contain("mmap").And.Contain("errno 13");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void TryMap_rejects_an_fd_that_is_not_open_with_the_errno_in_the_message()
    {
        using var notOpen = new FileDescriptor(-1);

        GuestMemoryRegion.TryMap(new MemoryRegionPayload(0, 0x1000, 0, 0), notOpen, out string error).Should().BeNull();

        error.Should().Contain("fstat").And.Contain("errno 9");
    }

    private static readonly MemoryRegionPayload Layout = new(
        GuestPhysicalAddress: 0x1_0000_0000,
        MemorySize: 0x3000,
        UserspaceAddress: 0x7F12_3456_0000,
        MmapOffset: 0x1000);

    [Fact]
    public void Mapped_region_translates_guest_physical_ranges_exactly_at_its_boundaries()
    {
        using FileDescriptor fd = Memfd.Create(0x5000);
        GuestMemoryRegion region = GuestMemoryRegion.TryMap(Layout, fd, out string error)!;
        region.Should().NotBeNull(error);
        try
        {
            ulong gpa = Layout.GuestPhysicalAddress;
            ulong size = Layout.MemorySize;

            region.TryTranslate(gpa, size, false, out nint host).Should().BeTrue();
            host.Should().Be(region.Base);
            region.TryTranslate(gpa, 1, false, out host).Should().BeTrue();
            host.Should().Be(region.Base);
            region.TryTranslate(gpa + size - 1, 1, false, out host).Should().BeTrue();
            host.Should().Be(region.Base + (nint)(size - 1));
            region.TryTranslate(gpa + 0x1234, size - 0x1234, false, out host).Should().BeTrue();
            host.Should().Be(region.Base + 0x1234);

            region.TryTranslate(gpa + size, 1, false, out _).Should().BeFalse("one byte past the end");
            region.TryTranslate(gpa + size - 1, 2, false, out _).Should().BeFalse("last byte plus one");
            region.TryTranslate(gpa, size + 1, false, out _).Should().BeFalse();
            region.TryTranslate(gpa - 1, 1, false, out _).Should().BeFalse("one byte before the start");
            region.TryTranslate(gpa - 1, 2, false, out _).Should().BeFalse();
        }
        finally
        {
            region.Release();
        }
    }

    [Fact]
    public void Mapped_region_translates_frontend_virtual_ranges_exactly_at_its_boundaries()
    {
        using FileDescriptor fd = Memfd.Create(0x5000);
        GuestMemoryRegion region = GuestMemoryRegion.TryMap(Layout, fd, out string error)!;
        region.Should().NotBeNull(error);
        try
        {
            ulong ua = Layout.UserspaceAddress;
            ulong size = Layout.MemorySize;

            region.TryTranslate(ua, size, true, out nint host).Should().BeTrue();
            host.Should().Be(region.Base);
            region.TryTranslate(ua + size - 1, 1, true, out host).Should().BeTrue();
            host.Should().Be(region.Base + (nint)(size - 1));

            region.TryTranslate(ua + size, 1, true, out _).Should().BeFalse();
            region.TryTranslate(ua + size - 1, 2, true, out _).Should().BeFalse();
            region.TryTranslate(ua - 1, 1, true, out _).Should().BeFalse();

            // The two address spaces are not interchangeable (PROTOCOL.md §8.3).
            region.TryTranslate(ua, 1, false, out _).Should().BeFalse();
            region.TryTranslate(Layout.GuestPhysicalAddress, 1, true, out _).Should().BeFalse();
        }
        finally
        {
            region.Release();
        }
    }

    [Theory]
    [InlineData(0x1_0000_0000UL, ulong.MaxValue)]
    [InlineData(0x1_0000_0001UL, ulong.MaxValue)]
    [InlineData(0x1_0000_2FFFUL, ulong.MaxValue)]
    [InlineData(0x1_0000_1000UL, 0xFFFF_FFFF_FFFF_F000UL)]  // offset + length wraps to 0
    [InlineData(ulong.MaxValue, 1UL)]
    [InlineData(ulong.MaxValue, ulong.MaxValue)]
    [InlineData(0UL, ulong.MaxValue)]
    [InlineData(0UL, 0x1_0000_1000UL)]
    public void Mapped_region_rejects_ranges_whose_length_overflows(ulong address, ulong length)
    {
        using FileDescriptor fd = Memfd.Create(0x5000);
        GuestMemoryRegion region = GuestMemoryRegion.TryMap(Layout, fd, out _)!;
        try
        {
            region.TryTranslate(address, length, false, out nint host).Should().BeFalse();
            host.Should().Be(0);
        }
        finally
        {
            region.Release();
        }
    }

    [Fact]
    public void Byte_written_through_a_translated_pointer_is_visible_in_the_memfd()
    {
        using FileDescriptor fd = Memfd.Create(0x5000);
        GuestMemoryRegion region = GuestMemoryRegion.TryMap(Layout, fd, out string error)!;
        region.Should().NotBeNull(error);
        try
        {
            ulong gpa = Layout.GuestPhysicalAddress;
            region.TryTranslate(gpa, 1, false, out nint first).Should().BeTrue();
            region.TryTranslate(gpa + Layout.MemorySize - 1, 1, false, out nint last).Should().BeTrue();
            region.TryTranslate(Layout.UserspaceAddress + 0x1800, 1, true, out nint middle).Should().BeTrue();

            Memfd.WriteByte(first, 0xA5);
            Memfd.WriteByte(last, 0x5A);
            Memfd.WriteByte(middle, 0x3C);

            // The region's first byte is mmap_offset bytes into the file.
            using (MemoryMapping second = Memfd.MapAgain(fd, 0x5000))
            {
                Memfd.ReadByte(second.Address + 0x1000).Should().Be(0xA5);
                Memfd.ReadByte(second.Address + 0x3FFF).Should().Be(0x5A);
                Memfd.ReadByte(second.Address + 0x2800).Should().Be(0x3C);
                Memfd.ReadByte(second.Address + 0x0FFF).Should().Be(0, "bytes before mmap_offset are untouched");
                Memfd.ReadByte(second.Address + 0x4000).Should().Be(0, "bytes after the region are untouched");

                // And the other way round: a write into the file shows through the region.
                Memfd.WriteByte(second.Address + 0x2000, 0x77);
                region.TryTranslate(gpa + 0x1000, 1, false, out nint p).Should().BeTrue();
                Memfd.ReadByte(p).Should().Be(0x77);
            }

            byte[] file = Memfd.ReadAll(fd);
            file.Should().HaveCount(0x5000);
            file[0x1000].Should().Be(0xA5);
            file[0x3FFF].Should().Be(0x5A);
            file[0x2800].Should().Be(0x3C);
            file.Count(b => b != 0).Should().Be(4);
        }
        finally
        {
            region.Release();
        }
    }

    [Fact]
    public void Region_with_an_mmap_offset_that_is_not_page_aligned_points_at_that_offset()
    {
        using FileDescriptor fd = Memfd.Create(0x1000);
        var d = new MemoryRegionPayload(0x4000, 0x100, 0x7F00_0000_4000, 0x123);
        GuestMemoryRegion region = GuestMemoryRegion.TryMap(d, fd, out string error)!;
        region.Should().NotBeNull(error);
        try
        {
            region.TryTranslate(0x4000, 0x100, false, out nint host).Should().BeTrue();
            Memfd.WriteByte(host, 0x11);
            Memfd.WriteByte(host + 0xFF, 0x22);

            byte[] file = Memfd.ReadAll(fd);
            file[0x123].Should().Be(0x11);
            file[0x222].Should().Be(0x22);
        }
        finally
        {
            region.Release();
        }
    }

    [Fact]
    public void Region_of_a_file_whose_size_is_not_a_page_multiple_maps_to_its_last_byte()
    {
        using FileDescriptor fd = Memfd.Create(0x1800);
        GuestMemoryRegion region = GuestMemoryRegion.TryMap(new MemoryRegionPayload(0, 0x1800, 0x10_0000, 0), fd, out string error)!;
        region.Should().NotBeNull(error);
        try
        {
            region.TryTranslate(0x17FF, 1, false, out nint host).Should().BeTrue();
            Memfd.WriteByte(host, 0x99);
            Memfd.ReadAll(fd)[0x17FF].Should().Be(0x99);
            region.TryTranslate(0x1800, 1, false, out _).Should().BeFalse();
        }
        finally
        {
            region.Release();
        }
    }

    [Fact]
    public void Mapping_stays_usable_after_the_fd_is_closed()
    {
        string name = Memfd.UniqueName("vhc-close");
        GuestMemoryRegion region;
        using (FileDescriptor fd = Memfd.Create(0x2000, name))
        {
            region = GuestMemoryRegion.TryMap(new MemoryRegionPayload(0, 0x2000, 0x10_0000, 0), fd, out string error)!;
            region.Should().NotBeNull(error);
        }

        try
        {
            region.TryTranslate(0x1FFF, 1, false, out nint host).Should().BeTrue();
            Memfd.WriteByte(host, 0x42);
            Memfd.ReadByte(host).Should().Be(0x42);
            Memfd.MapsLinesMentioning(name).Should().Be(1);
        }
        finally
        {
            region.Release();
        }
    }

    [Fact]
    public void Region_is_unmapped_only_when_its_last_reference_is_released()
    {
        string name = Memfd.UniqueName("vhc-ref");
        using FileDescriptor fd = Memfd.Create(0x1000, name);
        GuestMemoryRegion region = GuestMemoryRegion.TryMap(new MemoryRegionPayload(0, 0x1000, 0x10_0000, 0), fd, out string error)!;
        region.Should().NotBeNull(error);
        Memfd.MapsLinesMentioning(name).Should().Be(1);

        region.AddRef();
        region.Release();
        Memfd.MapsLinesMentioning(name).Should().Be(1, "one reference is still held");

        region.Release();
        Memfd.MapsLinesMentioning(name).Should().Be(0);
    }

    [Fact]
    public void Failed_TryMap_leaves_no_mapping_behind()
    {
        string name = Memfd.UniqueName("vhc-fail");
        using FileDescriptor fd = Memfd.Create(0x1000, name);

        GuestMemoryRegion.TryMap(new MemoryRegionPayload(0, 0x2000, 0x10_0000, 0), fd, out _).Should().BeNull();

        Memfd.MapsLinesMentioning(name).Should().Be(0);
    }

    [Fact]
    public void Matches_compares_guest_address_size_and_user_address_but_not_mmap_offset()
    {
        using FileDescriptor fd = Memfd.Create(0x3000);
        var d = new MemoryRegionPayload(0x1000, 0x1000, 0x7F00_0000_1000, 0x1000);
        GuestMemoryRegion region = GuestMemoryRegion.TryMap(d, fd, out _)!;
        try
        {
            region.Matches(d).Should().BeTrue();
            region.Matches(d with { MmapOffset = 0x2000 }).Should().BeTrue("REM_MEM_REG ignores mmap_offset");
            region.Matches(d with { GuestPhysicalAddress = 0x2000 }).Should().BeFalse();
            region.Matches(d with { MemorySize = 0x2000 }).Should().BeFalse();
            region.Matches(d with { UserspaceAddress = 0x7F00_0000_2000 }).Should().BeFalse();
        }
        finally
        {
            region.Release();
        }
    }
}
