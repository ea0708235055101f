using VhostCompat.Queues;

namespace VhostCompat.Tests.Queues;

/// <summary>DescriptorChain.GetWritableSegment: the device-writable guest buffers, in order, for vectored I/O.</summary>
public sealed class DescriptorChainSegmentTests : IDisposable
{
    private const ulong Data = 0x14000;
    private readonly GuestRam _ram = GuestRam.Single();

    public void Dispose() => _ram.Dispose();

    [Fact]
    public void Writable_segments_come_in_chain_order_over_guest_memory_and_others_are_refused()
    {
        var ring = new SplitRing(_ram, 8);
        ring.Chain([0, 1, 2, 3], new Elem(Data, 16), new Elem(Data + 0x100, 1000, Write: true), new Elem(Data + 0x800, 24, Write: true), new Elem(Data + 0x900, 1, Write: true));
        ring.Offer(0);
        var q = ring.Queue();
        q.TryPop(out var chain).Should().BeTrue();

        chain!.WritableSegmentCount.Should().Be(3);
        chain.GetWritableSegment(0).Length.Should().Be(1000);
        chain.GetWritableSegment(1).Fill(0x42);
        chain.GetWritableSegment(2).Length.Should().Be(1);
        _ram.Read(Data + 0x800, 24).Should().OnlyContain(b => b == 0x42, "the span is the guest's buffer itself");
        _ram.Read(Data, 16).Should().NotContain(0x42);

        chain.Invoking(c => c.GetWritableSegment(3)).Should().Throw<ArgumentOutOfRangeException>();
        chain.Invoking(c => c.GetWritableSegment(-1)).Should().Throw<ArgumentOutOfRangeException>();
        q.Push(chain, 0);
    }
}
