using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging.Abstractions;
using VhostCompat.Interop;
using VhostCompat.Memory;
using VhostCompat.Queues;

namespace VhostCompat.Tests.Queues;

/// <summary>
/// When the driver sees used elements: inside a handler pass the used index is published in batches (and always before
/// the worker looks at the ring again or notifies); outside one, and with inflight tracking, at every push. And a
/// driver that keeps adding buffers while kicks are off is served to the end without another kick.
/// </summary>
public sealed unsafe class UsedPublicationTests : IDisposable
{
    private const ulong Data = 0x14000;
    private readonly GuestRam _ram = GuestRam.Single();

    public void Dispose() => _ram.Dispose();

    private SplitRing RingWith(int size, int chains)
    {
        var ring = new SplitRing(_ram, size);
        for (int i = 0; i < chains; i++)
        {
            ring.Desc(i, Data + ((ulong)i * 64), 64);
        }

        ring.Offer([.. Enumerable.Range(0, chains).Select(i => (ushort)i)]);
        return ring;
    }

    private static DescriptorChain Pop(Virtqueue q)
    {
        q.TryPop(out var chain).Should().BeTrue(q.BrokenReason ?? "a chain is available");
        return chain!;
    }

    [Fact]
    public void Inside_a_handler_pass_the_used_index_moves_every_32_elements_and_when_the_pass_ends()
    {
        var ring = RingWith(64, 40);
        var q = ring.Queue();
        q.SetHandlerPass(true);
        for (int i = 0; i < 40; i++)
        {
            q.Push(Pop(q), 0);
            ring.Used(i).Should().Be(((uint)i, 0u), "the element itself is written at once");
            ring.UsedIdx.Should().Be(i < 31 ? (ushort)0 : (ushort)32, $"after {i + 1} pushes");
        }

        q.SetHandlerPass(false);
        ring.UsedIdx.Should().Be(40);
        q.CompletedChains.Should().Be(40);
    }

    [Fact]
    public void NotifyGuest_inside_a_pass_publishes_first()
    {
        var ring = RingWith(16, 3);
        var q = ring.Queue();
        q.SetHandlerPass(true);
        q.Push(Pop(q), 0);
        q.Push(Pop(q), 0);
        ring.UsedIdx.Should().Be(0);
        q.NotifyGuest();
        ring.UsedIdx.Should().Be(2, "the driver is told only about what it can see");
        q.Push(Pop(q), 0);
        q.SetHandlerPass(false);
        ring.UsedIdx.Should().Be(3);
    }

    [Fact]
    public void Outside_a_pass_every_push_is_visible_when_it_returns()
    {
        var ring = RingWith(16, 5);
        var q = ring.Queue();
        for (int i = 0; i < 5; i++)
        {
            q.Push(Pop(q), 0);
            ring.UsedIdx.Should().Be((ushort)(i + 1));
        }
    }

    [Fact]
    public void With_inflight_tracking_every_push_is_published_even_inside_a_pass()
    {
        int bytes = (int)InflightArea.QueueRegionSize(16, packed: false);
        nint region = (nint)NativeMemory.AllocZeroed((nuint)bytes);
        try
        {
            var ring = RingWith(16, 4);
            var q = ring.Queue();
            q.AttachInflight(region, 16).Should().BeNull();
            q.SetHandlerPass(true);
            for (int i = 0; i < 4; i++)
            {
                q.Push(Pop(q), 0);
                ring.UsedIdx.Should().Be((ushort)(i + 1), "a chain the record calls done must be visible to the driver");
            }

            q.SetHandlerPass(false);
        }
        finally
        {
            NativeMemory.Free((void*)region);
        }
    }

    [Fact]
    public void A_driver_that_keeps_adding_while_kicks_are_off_is_served_past_the_round_limit()
    {
        // The handler plays a streaming driver too: each round it adds one more chain, which the driver never kicks for
        // (the worker has kicks off while it drains). More rounds than the worker takes in one go must still all run.
        const int Total = 200;
        var ring = new SplitRing(_ram, 256);
        for (int i = 0; i < 256; i++)
        {
            ring.Desc(i, Data + ((ulong)i * 16), 16);
        }

        var q = ring.Queue();
        q.SetEnabled(true);
        int served = 0;
        int offered = 1;
        using var done = new ManualResetEventSlim();
        ring.Offer(0);
        using var kick = FileDescriptor.CreateEventFd(nonBlocking: true);
        using var worker = new VirtqueueWorker("test-worker", busyPoll: false, NullLogger.Instance);
        QueueBinding binding = worker.Attach(q, kick, queue =>
        {
            while (queue.TryPop(out DescriptorChain? chain))
            {
                queue.Push(chain, 0);
                served++;
            }

            if (offered < Total)
            {
                ring.Offer((ushort)(offered++ % 256));
            }
            else if (served == Total)
            {
                done.Set();
            }
        });

        done.Wait(TimeSpan.FromSeconds(30)).Should().BeTrue($"every chain is served without a kick (served {served} of {Total})");
        worker.Detach(binding);
        ring.UsedIdx.Should().Be(Total);
    }

    [Fact]
    public void A_chain_added_after_the_handlers_last_look_while_kicks_were_off_is_not_left_without_a_kick()
    {
        // The race of a streaming driver: the handler finds the ring empty, and the driver adds a chain before the worker
        // has turned kicks back on, so it does not kick. The worker must look once more after turning them on.
        var ring = new SplitRing(_ram, 16);
        ring.Desc(0, Data, 16);
        var q = ring.Queue();
        q.SetEnabled(true);
        int calls = 0;
        using var served = new ManualResetEventSlim();
        using var kick = FileDescriptor.CreateEventFd(nonBlocking: true);
        using var worker = new VirtqueueWorker("test-worker", busyPoll: false, NullLogger.Instance);
        QueueBinding binding = worker.Attach(q, kick, queue =>
        {
            if (calls++ == 0)
            {
                queue.TryPop(out _).Should().BeFalse("nothing was offered yet");
                ring.UsedFlags().Should().Be(1, "kicks are off while the handler runs");
                ring.Offer(0); // the driver adds now and, seeing NO_NOTIFY, does not kick
                return;
            }

            while (queue.TryPop(out DescriptorChain? chain))
            {
                queue.Push(chain, 0);
                served.Set();
            }
        });

        served.Wait(TimeSpan.FromSeconds(30)).Should().BeTrue("the chain is served without a kick");
        worker.Detach(binding);
        ring.UsedIdx.Should().Be(1);
    }
}
