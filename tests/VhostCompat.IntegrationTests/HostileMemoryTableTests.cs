using System.Net.Sockets;
using VhostCompat.IntegrationTests.Support;
using VhostCompat.Interop;
using VhostCompat.Protocol;

namespace VhostCompat.IntegrationTests;

/// <summary>HOSTILE-INPUTS.md group (b): memory tables that must be refused, all or nothing.</summary>
public sealed class HostileMemoryTableTests : HostileTestBase
{
    private const ulong MiB = 1 << 20;

    internal override BackendFixture CreateFixture() => new(configure: o => o.MaxMemorySlots = 2);

    private static MemoryRegionPayload Region(ulong gpa, ulong size, ulong user, ulong offset = 0) => new(gpa, size, user, offset);

    /// <summary>Installs a valid 1 MiB table and starts ring 0 on it; returns the memfd's frontend-side mapping so tests can verify the ring still runs.</summary>
    private async Task StartRingOnValidTableAsync()
    {
        await NegotiateProtocolAsync();
        using (var mem = Memfd((long)MiB))
        {
            (await Raw.AckAsync(FrontendRequest.SetMemTable, MemTable(Region(0, MiB, 0x7000_0000)), [mem.Value])).Should().Be(0);
        }

        (await Raw.AckAsync(FrontendRequest.SetVringNum, State(0, 64))).Should().Be(0);
        (await Raw.AckAsync(FrontendRequest.SetVringAddr, new VringAddressPayload(0, 0, 0x7000_0000, 0x7000_2000, 0x7000_1000, 0).Encode())).Should().Be(0);
        (await Raw.AckAsync(FrontendRequest.SetVringKick, U64(0x100))).Should().Be(0);
        Fx.Device.QueueEvents.Should().ContainSingle(q => q.Started);
    }

    private void AssertRingStillRunningOnOldTable()
    {
        Fx.Device.QueueEvents.Should().NotContain(q => !q.Started, "a refused table must leave the old one (and the ring on it) intact");
        Fx.Logs.Text.Split('\n').Count(l => l.Contains("Memory table:", StringComparison.Ordinal)).Should().Be(1);
    }

    [Fact]
    public async Task B1_zero_regions_is_rejected_and_the_ring_keeps_its_memory()
    {
        await StartRingOnValidTableAsync();
        (await Raw.AckAsync(FrontendRequest.SetMemTable, MemTable())).Should().Be(1);
        AssertRingStillRunningOnOldTable();
        await AssertNoLeaksAfterDisconnectAsync();
    }

    [Theory]
    [InlineData(9u, true)]
    [InlineData(9u, false)]
    [InlineData(0xFFFFFFFFu, false)]
    public async Task B2_too_many_regions_are_rejected_without_proportional_allocation(uint count, bool matchingSize)
    {
        int regions = matchingSize ? (int)count : 1;
        var payload = new byte[8 + (32 * regions)];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(payload, count);
        var fds = Enumerable.Range(0, Math.Min(regions, 9)).Select(_ => Memfd(4096)).ToArray();
        long before = GC.GetTotalAllocatedBytes(precise: true);
        (await Raw.AckAsync(FrontendRequest.SetMemTable, payload, fds.Select(f => f.Value).ToArray())).Should().Be(1);
        (GC.GetTotalAllocatedBytes(precise: true) - before).Should().BeLessThan(1 << 20);
        foreach (var f in fds)
        {
            f.Dispose();
        }

        await AssertNoLeaksAfterDisconnectAsync();
    }

    [Fact]
    public async Task B2_add_mem_reg_beyond_the_advertised_slots_is_rejected()
    {
        await NegotiateProtocolAsync();
        for (int i = 0; i < 3; i++)
        {
            using var fd = Memfd((long)MiB);
            var region = Region((ulong)i * MiB, MiB, 0x7000_0000 + ((ulong)i * MiB));
            (await Raw.AckAsync(FrontendRequest.AddMemReg, SingleRegionPayload.Encode(region), [fd.Value])).Should().Be(i < 2 ? 0ul : 1ul);
        }

        Fx.Logs.Text.Should().Contain("memory slots are in use");
        await AssertNoLeaksAfterDisconnectAsync();
    }

    [Fact]
    public async Task B3_fd_count_different_from_region_count_is_rejected_and_old_table_intact()
    {
        await StartRingOnValidTableAsync();
        using (var a = Memfd((long)MiB))
        {
            var table = MemTable(Region(0, MiB, 0x1000_0000), Region(MiB, MiB, 0x2000_0000));
            (await Raw.AckAsync(FrontendRequest.SetMemTable, table, [a.Value])).Should().Be(1);
            var payload = MemTable(Region(0, MiB, 0x1000_0000));
            (await Raw.AckAsync(FrontendRequest.SetMemTable, payload.Concat(new byte[32]).ToArray(), [a.Value])).Should().Be(1, "payload size does not match nregions");
        }

        AssertRingStillRunningOnOldTable();
        await AssertNoLeaksAfterDisconnectAsync();
    }

    [Fact]
    public async Task B4_zero_size_region_is_rejected()
    {
        using var fd = Memfd((long)MiB);
        (await Raw.AckAsync(FrontendRequest.SetMemTable, MemTable(Region(0, 0, 0x1000_0000)), [fd.Value])).Should().Be(1);
        Fx.Logs.Text.Should().Contain("region size is 0");
    }

    public static TheoryData<ulong, ulong, ulong, ulong, bool> OverflowVectors => new()
    {
        { 0xFFFF_FFFF_FFFF_F000, 0x1000, 0x1000_0000, 0, false },           // gpa + size == 2^64
        { 0xFFFF_FFFF_FFFF_EFFF, 0x1000, 0x1000_0000, 0, true },            // ends exactly at 2^64 - 1: legal
        { 0, 0x1000, 0xFFFF_FFFF_FFFF_F001, 0, false },                      // frontend address wraps
        { 0, 0x1000, 0x1000_0000, 0xFFFF_FFFF_FFFF_F001, false },            // mmap offset wraps
        { 0, ulong.MaxValue, 0, 0, false },                                   // size alone wraps everything
    };

    [Theory]
    [MemberData(nameof(OverflowVectors))]
    public async Task B5_overflowing_region_arithmetic_is_rejected(ulong gpa, ulong size, ulong user, ulong offset, bool legal)
    {
        using var fd = Memfd(0x2000);
        ulong? ack = await Raw.AckAsync(FrontendRequest.SetMemTable, MemTable(Region(gpa, size, user, offset)), [fd.Value]);
        ack.Should().Be(legal ? 0ul : 1ul);
    }

    [Fact]
    public async Task B6_overlapping_guest_physical_or_frontend_ranges_are_rejected()
    {
        await StartRingOnValidTableAsync();
        using var a = Memfd((long)MiB);
        using var b = Memfd((long)MiB);
        int[] fds = [a.Value, b.Value];
        (await Raw.AckAsync(FrontendRequest.SetMemTable, MemTable(Region(0, MiB, 0x1000_0000), Region(MiB / 2, MiB, 0x2000_0000)), fds)).Should().Be(1);
        (await Raw.AckAsync(FrontendRequest.SetMemTable, MemTable(Region(0, MiB, 0x1000_0000), Region(4 * MiB, MiB, 0x1000_0000 + (MiB / 2))), fds)).Should().Be(1);
        Fx.Logs.Text.Should().Contain("overlap in guest physical space").And.Contain("overlap in frontend address space");
        AssertRingStillRunningOnOldTable();
    }

    public static TheoryData<string> UnmappableKinds => new() { "socket", "pipe", "eventfd", "directory", "devnull", "readonly-file", "too-small-memfd" };

    [Theory]
    [MemberData(nameof(UnmappableKinds))]
    public async Task B9_fds_that_are_not_mappable_memory_are_rejected_with_the_reason_and_closed(string kind)
    {
        await StartRingOnValidTableAsync();
        string dir = Path.Combine(Fx.Directory, "b9");
        Directory.CreateDirectory(dir);
        string roFile = Path.Combine(dir, "ro");
        File.WriteAllBytes(roFile, new byte[2 * MiB]);
        var opened = new List<IDisposable>();
        int fd = kind switch
        {
            "socket" => Track(new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified), s => (int)s.SafeHandle.DangerousGetHandle()),
            "pipe" => Track(new System.IO.Pipes.AnonymousPipeServerStream(), p => (int)p.SafePipeHandle.DangerousGetHandle()),
            "eventfd" => Track(FileDescriptor.CreateEventFd(), e => e.Value),
            "directory" => Track(new FileDescriptor(Libc.Open(dir, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_CLOEXEC)), d => d.Value),
            "devnull" => Track(File.OpenHandle("/dev/null", FileMode.Open, FileAccess.ReadWrite), h => (int)h.DangerousGetHandle()),
            "readonly-file" => Track(File.OpenHandle(roFile, FileMode.Open, FileAccess.Read), h => (int)h.DangerousGetHandle()),
            _ => Track(Memfd(4096), m => m.Value),
        };

        int Track<T>(T resource, Func<T, int> fdOf)
            where T : IDisposable
        {
            opened.Add(resource);
            return fdOf(resource);
        }

        (await Raw.AckAsync(FrontendRequest.SetMemTable, MemTable(Region(0x4000_0000, MiB, 0x5000_0000)), [fd])).Should().Be(1);
        foreach (var r in opened)
        {
            r.Dispose();
        }

        Fx.Logs.Text.Should().MatchRegex("region 0: (region fd is not a regular memory file|mmap failed: errno|region needs)");
        AssertRingStillRunningOnOldTable();
        await AssertNoLeaksAfterDisconnectAsync();
    }

    [Fact]
    public async Task Ring_addresses_outside_guest_memory_never_start_the_ring()
    {
        await NegotiateProtocolAsync();
        using (var mem = Memfd((long)MiB))
        {
            (await Raw.AckAsync(FrontendRequest.SetMemTable, MemTable(Region(0, MiB, 0x7000_0000)), [mem.Value])).Should().Be(0);
        }

        (await Raw.AckAsync(FrontendRequest.SetVringNum, State(0, 256))).Should().Be(0);
        // The used ring would end 8 bytes past the region: it must not start.
        ulong used = 0x7000_0000 + MiB - (6 + (8 * 256)) + 8;
        used &= ~3ul;
        (await Raw.AckAsync(FrontendRequest.SetVringAddr, new VringAddressPayload(0, 0, 0x7000_0000, used, 0x7000_1000, 0).Encode())).Should().Be(0);
        (await Raw.AckAsync(FrontendRequest.SetVringKick, U64(0x100))).Should().Be(0);
        Fx.Device.QueueEvents.Should().BeEmpty();
        Fx.Logs.Text.Should().Contain("device area").And.Contain("is not inside guest memory");
    }
}
