using VhostCompat.Interop;
using VhostCompat.Memory;
using VhostCompat.Protocol;
using VhostCompat.Queues;
using VhostCompat.Tests.Support;

namespace VhostCompat.Tests.Queues;

/// <summary>
/// A log replaced by SET_LOG_BASE is read one last time by the frontend and freed once the reply is sent: after the
/// replacement is installed and the old log retired, no mark may land in the old one, and every later write (a chain
/// popped before the change and completed after it, in any order) must be marked in the new one. Split and packed rings.
/// </summary>
public sealed class DirtyLogReplacementTests : IDisposable
{
    private const ulong Data = 0x14000; // four buffers, one page each: 0x14000, 0x15000, 0x16000, 0x17000
    private const ulong Page = 4096;

    private readonly GuestRam _ram = GuestRam.Single();
    private readonly List<IDisposable> _owned = [];

    public void Dispose()
    {
        foreach (var d in _owned)
        {
            d.Dispose();
        }

        _ram.Dispose();
    }

    private (DirtyLog Log, FileDescriptor Fd) NewLog()
    {
        var fd = Memfd.Create(4096, Memfd.UniqueName("vhc-log"));
        _owned.Add(fd);
        var log = DirtyLog.TryMap(new LogDescriptionPayload(4096, 0), fd, _ram.Table, out string error) ?? throw new InvalidOperationException(error);
        return (log, fd);
    }

    private static bool IsDirty(FileDescriptor log, ulong gpa)
    {
        ulong page = gpa / Page;
        return (Memfd.ReadAll(log)[(int)(page / 8)] & (1 << (int)(page % 8))) != 0;
    }

    private Virtqueue Offer(bool packed, out ulong ringWrites)
    {
        if (packed)
        {
            var ring = new PackedRing(_ram, 8);
            for (ushort id = 0; id < 4; id++)
            {
                ring.Post(id, new Elem(Data + (id * Page), 64, Write: true));
            }

            ringWrites = ring.RingGpa;
            return ring.Queue();
        }

        var split = new SplitRing(_ram, 8);
        for (int i = 0; i < 4; i++)
        {
            split.Chain([i], new Elem(Data + ((ulong)i * Page), 64, Write: true));
        }

        split.Offer(0, 1, 2, 3);
        ringWrites = split.UsedGpa;
        var q = split.Queue();
        q.SetUsedRingLogging(true, split.UsedGpa);
        return q;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Chains_popped_before_a_log_replacement_and_completed_after_it_out_of_order_are_marked_only_in_the_new_log(bool packed)
    {
        var q = Offer(packed, out ulong ringGpa);
        var (oldLog, oldFd) = NewLog();
        q.SetLog(oldLog);
        var chains = new DescriptorChain[4];
        for (int i = 0; i < 4; i++)
        {
            q.TryPop(out chains[i]!).Should().BeTrue(q.BrokenReason ?? "four chains are available");
        }

        // One completes under the old log.
        chains[2].WriteWritable(0, new byte[64]).Should().Be(64);
        q.Push(chains[2], 64);
        IsDirty(oldFd, Data + (2 * Page)).Should().BeTrue();
        IsDirty(oldFd, ringGpa).Should().BeTrue("the ring write of the push is logged too");

        // SET_LOG_BASE: the new log is installed, then the old one retired (what the session does before replying).
        var (newLog, newFd) = NewLog();
        q.SetLog(newLog);
        oldLog.Retire();
        byte[] frozen = Memfd.ReadAll(oldFd);

        foreach (int i in new[] { 3, 0, 1 })
        {
            chains[i].WriteWritable(0, new byte[64]).Should().Be(64);
            q.Push(chains[i], 64);
        }

        Memfd.ReadAll(oldFd).Should().Equal(frozen, "nothing may be marked in a log the frontend has already replaced");
        foreach (int i in new[] { 3, 0, 1 })
        {
            IsDirty(newFd, Data + ((ulong)i * Page)).Should().BeTrue($"chain {i} was written after the replacement");
            IsDirty(oldFd, Data + ((ulong)i * Page)).Should().BeFalse();
        }

        IsDirty(newFd, Data + (2 * Page)).Should().BeFalse("chain 2 was written before the replacement, into the old log");
        IsDirty(newFd, ringGpa).Should().BeTrue("the pushes after the replacement wrote the ring");
        newLog.Release();
        oldLog.Release();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_chain_written_on_another_thread_while_the_log_is_replaced_never_marks_the_retired_log(bool packed)
    {
        var q = Offer(packed, out _);
        var (oldLog, oldFd) = NewLog();
        q.SetLog(oldLog);
        q.TryPop(out var chain).Should().BeTrue();
        ulong buffer = Data;
        using var written = new SemaphoreSlim(0);
        using var stop = new CancellationTokenSource();
        long writes = 0;
        var writer = Task.Run(() =>
        {
            var bytes = new byte[64];
            while (!stop.IsCancellationRequested)
            {
                chain!.WriteWritable(0, bytes);
                Interlocked.Increment(ref writes);
                written.Release();
            }
        });

        (await written.WaitAsync(TimeSpan.FromSeconds(10))).Should().BeTrue("the writer runs");
        var (newLog, newFd) = NewLog();
        q.SetLog(newLog);
        oldLog.Retire();

        // Clear the old log's bits as the frontend's final read would, then let the writer go on: nothing may reappear.
        using (var view = Memfd.MapAgain(oldFd, 4096))
        {
            unsafe
            {
                new Span<byte>((void*)view.Address, 4096).Clear();
            }
        }

        long atRetire = Interlocked.Read(ref writes);
        SpinWait.SpinUntil(() => Interlocked.Read(ref writes) > atRetire + 10_000, TimeSpan.FromSeconds(10)).Should().BeTrue("the writer keeps writing");
        stop.Cancel();
        await writer;
        Memfd.ReadAll(oldFd).Should().OnlyContain(b => b == 0, "writes after the retirement go to the new log only");
        IsDirty(newFd, buffer).Should().BeTrue();
        q.Push(chain!, 64);
        newLog.Release();
        oldLog.Release();
    }
}
