using VhostCompat.Interop;
using VhostCompat.Protocol;
using VhostCompat.Proxy;
using VhostCompat.Virtio;

namespace VhostCompat.Tests.Proxy;

public sealed class MessageShieldTests
{
    private const ulong Uva = 0x7f00_0000_0000, Mib = 1 << 20;

    private static string? CheckTable(params MemoryRegionPayload[] regions)
    {
        var shield = new MessageShield(VirtioDeviceType.Net, VirtioFeatureBits.Version1, 0, 2, 1024, requireSealed: false);
        byte[] payload = MemoryTablePayload.Encode(regions);
        var fds = regions.Select(_ => FileDescriptor.CreateMemfd("vhostcompat-shield-unit", (long)Mib)).ToArray();
        using var message = new VhostUserMessage(new MessageHeader((uint)FrontendRequest.SetMemTable, MessageHeader.Version, (uint)payload.Length), payload, fds);
        return shield.Check(message);
    }

    [Fact]
    public void SetMemTable_with_distinct_guest_ranges_but_overlapping_frontend_addresses_is_refused() =>
        CheckTable(new MemoryRegionPayload(0, Mib, Uva, 0), new MemoryRegionPayload(0x1000_0000, Mib, Uva + (Mib / 2), 0))
            .Should().Contain("frontend range");

    [Fact]
    public void SetMemTable_with_overlapping_guest_ranges_is_refused() =>
        CheckTable(new MemoryRegionPayload(0, Mib, Uva, 0), new MemoryRegionPayload(Mib / 2, Mib, Uva + 0x1000_0000, 0))
            .Should().Contain("guest range");

    [Fact]
    public void SetMemTable_with_adjacent_regions_is_forwarded() =>
        CheckTable(new MemoryRegionPayload(0, Mib, Uva, 0), new MemoryRegionPayload(Mib, Mib, Uva + Mib, 0)).Should().BeNull();
}
