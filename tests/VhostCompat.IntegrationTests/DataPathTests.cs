using System.Text;
using VhostCompat.Frontend;
using VhostCompat.IntegrationTests.Support;
using VhostCompat.Protocol;

namespace VhostCompat.IntegrationTests;

/// <summary>Rings laid out by the C# frontend in shared memfd memory, processed by the backend's worker.</summary>
public sealed class DataPathTests
{
    private static async Task<(BackendFixture Fx, VhostUserFrontend Fe, GuestMemory Mem, SplitRingDriver Ring, EventNotifier Kick, EventNotifier Call)> StartAsync()
    {
        var fx = new BackendFixture();
        await fx.WaitListeningAsync();
        var fe = await VhostUserFrontend.ConnectAsync(fx.SocketPath);
        await fe.NegotiateAsync(ulong.MaxValue, (VhostUserProtocolFeatures)ulong.MaxValue);
        var mem = new GuestMemory(0, 4 << 20);
        await fe.SetMemTableAsync([mem]);
        var ring = new SplitRingDriver(mem, 0, 64);
        var kick = new EventNotifier();
        var call = new EventNotifier();
        await ring.ConfigureAsync(fe, 0, kick, call);
        await fe.SetVringEnableAsync(0, true);
        return (fx, fe, mem, ring, kick, call);
    }

    [Fact]
    public async Task Kicked_requests_are_processed_and_completed_with_a_call()
    {
        var (fx, fe, mem, ring, kick, call) = await StartAsync();
        await using var _ = fx;
        await using var __ = fe;
        using var ___ = mem;
        for (int i = 0; i < 10; i++)
        {
            ushort head = ring.AddRequest(Encoding.ASCII.GetBytes($"hello {i}"), 64);
            kick.Signal();
            var used = await ring.WaitUsedAsync(1);
            used.Should().Equal([((uint)head, (uint)$"hello {i}".Length)]);
            var back = new byte[used[0].Len];
            mem.Read(ring.LastWritable, back);
            Encoding.ASCII.GetString(back).Should().Be(new string($"hello {i}".Reverse().ToArray()));
        }

        call.Consume().Should().BeGreaterThan(0, "the backend signals the call eventfd after completing");
        (await fe.GetVringBaseAsync(0)).Should().Be(10u, "GET_VRING_BASE reports the next avail index");
        kick.Dispose();
        call.Dispose();
    }

    [Fact]
    public async Task Avail_index_jump_beyond_the_ring_size_breaks_only_that_queue()
    {
        var (fx, fe, mem, ring, kick, call) = await StartAsync();
        await using var _ = fx;
        await using var __ = fe;
        using var ___ = mem;
        ring.SetAvailIndex(65);
        kick.Signal();
        await WaitForAsync(() => !fx.Device.BrokenQueues.IsEmpty);
        fx.Device.BrokenQueues.Should().ContainSingle().Which.Should().Contain("more than the ring size");
        fx.Logs.Text.Should().Contain("Queue 0 is broken");
        (await fe.GetFeaturesAsync()).Should().Be(fx.Backend.OfferedFeatures, "the session keeps serving");
        kick.Dispose();
        call.Dispose();
    }

    [Fact]
    public async Task A_descriptor_loop_is_detected_and_nothing_is_written()
    {
        var (fx, fe, mem, ring, kick, call) = await StartAsync();
        await using var _ = fx;
        await using var __ = fe;
        using var ___ = mem;
        ulong buf = ring.Allocate(16);
        ring.WriteDescriptor(0, buf, 16, 1, 1);
        ring.WriteDescriptor(1, buf, 16, 1, 0); // 0 -> 1 -> 0 -> ...
        ring.Publish(0);
        kick.Signal();
        await WaitForAsync(() => !fx.Device.BrokenQueues.IsEmpty);
        fx.Device.BrokenQueues.Should().ContainSingle().Which.Should().Contain("loop");
        ring.UsedIndex().Should().Be(0);
        kick.Dispose();
        call.Dispose();
    }

    [Fact]
    public async Task Memory_table_replaced_while_the_ring_runs_moves_the_ring_to_the_new_mapping()
    {
        var (fx, fe, mem, ring, kick, call) = await StartAsync();
        await using var _ = fx;
        await using var __ = fe;
        using var ___ = mem;
        ring.AddRequest("before"u8, 16);
        kick.Signal();
        await ring.WaitUsedAsync(1);
        using var extra = new GuestMemory(64 << 20, 1 << 20);
        await fe.SetMemTableAsync([mem, extra]); // same memory plus a new region: the running ring must survive
        ring.AddRequest("after"u8, 16);
        kick.Signal();
        (await ring.WaitUsedAsync(1)).Single().Len.Should().Be(5);
        fx.Device.QueueEvents.Should().NotContain(q => !q.Started);
        kick.Dispose();
        call.Dispose();
    }

    private static async Task WaitForAsync(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow.AddSeconds(5);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException();
            }

            await Task.Delay(5);
        }
    }
}
