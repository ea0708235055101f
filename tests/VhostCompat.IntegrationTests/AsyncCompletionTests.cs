using System.Text;
using VhostCompat.Frontend;
using VhostCompat.IntegrationTests.Support;
using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.IntegrationTests;

/// <summary>
/// Devices that complete requests later (asynchronous I/O): <c>Virtqueue.Wake</c> brings the work back onto the
/// queue's worker from any thread, and a chain held across a memory-table replacement keeps the memory it was
/// translated against mapped until it is pushed, so a late completion never writes into an unmapped region.
/// </summary>
public sealed class AsyncCompletionTests
{
    private static bool IsSlow(byte[] data) => Encoding.ASCII.GetString(data).StartsWith("slow", StringComparison.Ordinal);

    [Fact]
    public async Task Wake_from_another_thread_runs_the_handler_on_the_worker_and_held_chains_complete()
    {
        await using var fx = new BackendFixture(new TestDevice { Hold = IsSlow });
        await fx.WaitListeningAsync();
        await using var fe = await VhostUserFrontend.ConnectAsync(fx.SocketPath);
        await fe.NegotiateAsync(VirtioFeatureBits.Version1, VhostUserProtocolFeatures.ReplyAck);
        using var mem = new GuestMemory(0, 4 << 20);
        await fe.SetMemTableAsync([mem]);
        var ring = new SplitRingDriver(mem, 0, 16);
        using var kick = new EventNotifier();
        await ring.ConfigureAsync(fe, 0, kick, null);
        await fe.SetVringEnableAsync(0, true);
        ushort slow = ring.AddRequest("slow"u8, 16);
        ulong slowBuffer = ring.LastWritable;
        kick.Signal();
        SpinWait.SpinUntil(() => fx.Device.Held.Count == 1, TimeSpan.FromSeconds(5)).Should().BeTrue();
        ring.UsedIndex().Should().Be(0);

        fx.Device.ReleaseHeld = true;
        await Task.Run(() => fx.Device.LastQueue!.Wake()); // no kick: only the wake-up
        var used = await ring.WaitUsedAsync(1);
        used.Single().Should().Be((slow, 8u));
        var bytes = new byte[8];
        mem.Read(slowBuffer, bytes);
        Encoding.ASCII.GetString(bytes).Should().Be("released");
    }

    [Fact]
    public async Task A_chain_held_across_a_memory_table_change_keeps_its_memory_mapped_until_it_is_pushed()
    {
        await using var fx = new BackendFixture(new TestDevice { Hold = IsSlow });
        await fx.WaitListeningAsync();
        await using var fe = await VhostUserFrontend.ConnectAsync(fx.SocketPath);
        await fe.NegotiateAsync(VirtioFeatureBits.Version1, VhostUserProtocolFeatures.ReplyAck | VhostUserProtocolFeatures.ConfigureMemSlots);
        using var rings = new GuestMemory(0, 4 << 20);
        using var buffers = new GuestMemory(0x1000000, 1 << 20);
        await fe.SetMemTableAsync([rings, buffers]);
        var ring = new SplitRingDriver(rings, 0, 16);
        using var kick = new EventNotifier();
        await ring.ConfigureAsync(fe, 0, kick, null);
        await fe.SetVringEnableAsync(0, true);
        int mapped = ProcessResources.GuestMemoryMappings();

        // The request's buffers live in the second region, the ring in the first.
        const ulong Request = 0x1000000, Reply = 0x1000100;
        buffers.Write(Request, "slow"u8);
        ring.WriteDescriptor(0, Request, 4, 1, 1);
        ring.WriteDescriptor(1, Reply, 16, 2, 0);
        ring.Publish(0);
        kick.Signal();
        SpinWait.SpinUntil(() => fx.Device.Held.Count == 1, TimeSpan.FromSeconds(5)).Should().BeTrue();

        // The frontend removes that region while the device still holds the chain (memory unplug, say).
        await fe.RemoveMemoryRegionAsync(buffers);
        await Task.Delay(200);
        ProcessResources.GuestMemoryMappings().Should().Be(mapped, "the backend keeps the removed region mapped for the held chain");

        fx.Device.ReleaseHeld = true;
        fx.Device.LastQueue!.Wake();
        (await ring.WaitUsedAsync(1)).Single().Should().Be((0, 8u));
        var bytes = new byte[8];
        buffers.Read(Reply, bytes);
        Encoding.ASCII.GetString(bytes).Should().Be("released", "the late completion wrote into the memory it was given, still mapped");
        SpinWait.SpinUntil(() => ProcessResources.GuestMemoryMappings() == mapped - 1, TimeSpan.FromSeconds(5))
            .Should().BeTrue("once the chain is pushed the backend lets the removed region go");
    }
}
