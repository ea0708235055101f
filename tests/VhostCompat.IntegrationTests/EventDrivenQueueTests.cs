using System.Collections.Concurrent;
using System.IO.Pipes;
using VhostCompat.Backend;
using VhostCompat.Frontend;
using VhostCompat.IntegrationTests.Support;
using VhostCompat.Protocol;
using VhostCompat.Queues;
using VhostCompat.Virtio;

namespace VhostCompat.IntegrationTests;

/// <summary>
/// Event-driven devices: buffers held with <see cref="HeldChains"/> and completed from an external fd watched on
/// the queue's worker (<see cref="Virtqueue.WatchReadable"/>), the enable hook, and a handler that leaves buffers
/// on the ring being run once per kick rather than re-entered.
/// </summary>
public sealed class EventDrivenQueueTests
{
    /// <summary>Holds every eventq buffer; each byte written into <see cref="Events"/> completes one held buffer.</summary>
    private sealed class EventDevice : VhostUserDevice
    {
        private HeldChains? _held;
        private IDisposable? _watch;

        public AnonymousPipeServerStream Events { get; } = new(PipeDirection.In);

        public bool LeaveOnRing { get; init; }

        public bool ThrowOnEvent { get; init; }

        public int EndOfFileCalls;

        public Virtqueue? Queue;

        public int HandlerCalls;

        public ConcurrentQueue<bool> EnableEvents { get; } = new();

        public ConcurrentQueue<int> Threads { get; } = new();

        public int HeldCount;

        public Virtqueue? Stopped;

        public override VirtioDeviceType DeviceType => VirtioDeviceType.Input;

        public override ulong DeviceFeatures => VirtioFeatureBits.Version1;

        public override int QueueCount => 2;

        public override void OnQueueStarted(Virtqueue queue) => _held = new HeldChains(queue);

        public override void OnQueueEnabledChanged(Virtqueue queue, bool enabled)
        {
            Threads.Enqueue(Environment.CurrentManagedThreadId);
            if (enabled)
            {
                _watch = queue.WatchReadable(Events.SafePipeHandle, OnEvents);
            }
            else
            {
                _watch?.Dispose();
                _watch = null;
            }

            EnableEvents.Enqueue(enabled);
        }

        public override void OnQueueKicked(Virtqueue queue)
        {
            Interlocked.Increment(ref HandlerCalls);
            Threads.Enqueue(Environment.CurrentManagedThreadId);
            if (!LeaveOnRing)
            {
                Volatile.Write(ref HeldCount, _held!.TakeAvailable());
            }
        }

        private void OnEvents(Virtqueue queue)
        {
            Threads.Enqueue(Environment.CurrentManagedThreadId);
            Queue = queue;
            if (ThrowOnEvent)
            {
                throw new InvalidOperationException("device bug");
            }

            Span<byte> one = stackalloc byte[1];
            int n = Events.Read(one);
            if (n == 0)
            {
                Interlocked.Increment(ref EndOfFileCalls);
            }
            else
            {
                Span<byte> ev = [one[0], one[0], one[0], one[0], 0, 0, 0, 0];
                _held!.TryComplete(ev);
                Volatile.Write(ref HeldCount, _held.Count);
            }
        }

        public override void OnQueueStopped(Virtqueue queue)
        {
            _held?.Clear();
            Stopped = queue;
        }
    }

    private static async Task<(VhostUserFrontend Fe, GuestMemory Mem, SplitRingDriver Ring, EventNotifier Kick)> StartAsync(BackendFixture fx)
    {
        await fx.WaitListeningAsync();
        var fe = await VhostUserFrontend.ConnectAsync(fx.SocketPath);
        await fe.NegotiateAsync(VirtioFeatureBits.Version1, VhostUserProtocolFeatures.ReplyAck);
        var mem = new GuestMemory(0, 4 << 20);
        await fe.SetMemTableAsync([mem]);
        var ring = new SplitRingDriver(mem, 0, 16);
        var kick = new EventNotifier();
        await ring.ConfigureAsync(fe, 0, kick, null);
        return (fe, mem, ring, kick);
    }

    [Fact]
    public async Task Held_buffers_are_completed_from_an_external_fd_on_the_queue_worker()
    {
        var device = new EventDevice();
        await using var fx = new BackendFixture(device);
        var (fe, mem, ring, kick) = await StartAsync(fx);
        await using var _ = fe;
        using var __ = mem;
        using var ___ = kick;
        await fe.SetVringEnableAsync(0, true); // the reply comes after the worker reported the change
        device.EnableEvents.Should().Equal(true);

        var buffers = new List<(ushort Head, ulong Gpa)>();
        for (int i = 0; i < 4; i++)
        {
            buffers.Add((ring.AddWritable(8), ring.LastWritable));
        }

        kick.Signal();
        SpinWait.SpinUntil(() => Volatile.Read(ref device.HeldCount) == 4, TimeSpan.FromSeconds(5)).Should().BeTrue();
        ring.UsedIndex().Should().Be(0, "nothing is completed before an event arrives");

        using var writer = new AnonymousPipeClientStream(PipeDirection.Out, device.Events.ClientSafePipeHandle);
        writer.Write([0x11, 0x22, 0x33]);
        var used = await ring.WaitUsedAsync(3);
        used.Should().Equal((buffers[0].Head, 8u), (buffers[1].Head, 8u), (buffers[2].Head, 8u));
        var bytes = new byte[8];
        mem.Read(buffers[1].Gpa, bytes);
        bytes.Should().Equal(0x22, 0x22, 0x22, 0x22, 0, 0, 0, 0);
        device.Threads.Distinct().Should().ContainSingle("the enable hook, the handler and the fd callback all run on the queue's worker");

        await fe.SetVringEnableAsync(0, false);
        device.EnableEvents.Should().Equal(true, false);
        await fe.GetVringBaseAsync(0);
        Action late = () => device.Stopped!.WatchReadable(device.Events.SafePipeHandle, _ => { });
        late.Should().Throw<InvalidOperationException>("a stopped queue has no worker to watch fds on");
    }

    [Fact]
    public async Task A_handler_that_leaves_buffers_on_the_ring_runs_once_per_kick()
    {
        var device = new EventDevice { LeaveOnRing = true };
        await using var fx = new BackendFixture(device);
        var (fe, mem, ring, kick) = await StartAsync(fx);
        await using var _ = fe;
        using var __ = mem;
        using var ___ = kick;
        await fe.SetVringEnableAsync(0, true);
        int before = Volatile.Read(ref device.HandlerCalls);

        ring.AddWritable(8);
        ring.AddWritable(8);
        kick.Signal();
        SpinWait.SpinUntil(() => Volatile.Read(ref device.HandlerCalls) == before + 1, TimeSpan.FromSeconds(5)).Should().BeTrue();

        // SET_VRING_ENABLE is answered after the worker ran the device once more for it, so every pass for the kick is over.
        await fe.SetVringEnableAsync(0, false);
        device.HandlerCalls.Should().Be(before + 2, "one pass for the kick (the buffers stay on the ring: no re-entry) and one for the disable");
        ring.UsedIndex().Should().Be(0);
    }

    [Fact]
    public async Task A_hang_up_ends_the_watch_after_one_last_call()
    {
        var device = new EventDevice();
        await using var fx = new BackendFixture(device);
        var (fe, mem, ring, kick) = await StartAsync(fx);
        await using var _ = fe;
        using var __ = mem;
        using var ___ = kick;
        await fe.SetVringEnableAsync(0, true);
        device.Events.DisposeLocalCopyOfClientHandle(); // the only write end goes away: the read end reports hang-up
        SpinWait.SpinUntil(() => Volatile.Read(ref device.EndOfFileCalls) >= 1, TimeSpan.FromSeconds(5)).Should().BeTrue();

        // A level-triggered hang-up that stayed watched would run the callback on every pass of the worker; this
        // round trip through the worker (SET_VRING_ENABLE is answered after it ran there) comes after many passes.
        await fe.SetVringEnableAsync(0, false);
        device.EndOfFileCalls.Should().Be(1);
    }

    [Fact]
    public async Task An_exception_from_an_fd_callback_breaks_only_that_queue()
    {
        var device = new EventDevice { ThrowOnEvent = true };
        await using var fx = new BackendFixture(device);
        var (fe, mem, ring, kick) = await StartAsync(fx);
        await using var _ = fe;
        using var __ = mem;
        using var ___ = kick;
        await fe.SetVringEnableAsync(0, true);
        using var writer = new AnonymousPipeClientStream(PipeDirection.Out, device.Events.ClientSafePipeHandle);
        writer.Write([1]);
        SpinWait.SpinUntil(() => device.Queue?.IsBroken == true, TimeSpan.FromSeconds(5)).Should().BeTrue();
        device.Queue!.BrokenReason.Should().Contain("fd callback threw InvalidOperationException");
        (await fe.GetFeaturesAsync()).Should().NotBe(0, "the connection and the other queues keep running");
    }
}
