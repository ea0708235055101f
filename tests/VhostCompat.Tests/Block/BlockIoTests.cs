using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;
using VhostCompat.Samples.Block;
using VhostCompat.Tests.Queues;

namespace VhostCompat.Tests.Block;

/// <summary>
/// samples/Block's request path in process: a fake image with scripted system-call results, a split ring laid out by
/// hand. Whole transfers out of short counts and EINTR, page-cache hits finished inside the kick, EAGAIN handed to the
/// I/O threads and completed on the next kick, RWF_NOWAIT refused, I/O errors, and the I/O threads' shutdown.
/// Waits are for events (a semaphore the queue's waker releases), never for time.
/// </summary>
public sealed class BlockIoTests : IDisposable
{
    private const int EINTR = 4, EAGAIN = 11, EIO = 5, EOPNOTSUPP = 95;
    private const ulong Data = 0x14000;
    private readonly GuestRam _ram = GuestRam.Single();

    public void Dispose() => _ram.Dispose();

    /// <summary>An image in memory; each call first takes the next scripted result (a count cap or -errno), if any.</summary>
    private sealed class FakeImage(int size) : IBlockFile
    {
        public readonly byte[] Bytes = new byte[size];
        public readonly Queue<long> Script = new();
        public readonly List<(bool Read, long Offset, int Length, bool NoWait)> Calls = [];

        /// <summary>Every call with noWait fails with this (0: none).</summary>
        public int NoWaitError;

        public long Read(Span<byte> buffer, long offset, bool noWait)
        {
            lock (Calls)
            {
                Calls.Add((true, offset, buffer.Length, noWait));
                long cap = Next(noWait) ?? long.MaxValue;
                if (cap <= 0)
                {
                    return cap;
                }
                else
                {
                    int n = (int)Math.Min(Math.Min(buffer.Length, cap), Math.Max(0, Bytes.Length - offset));
                    Bytes.AsSpan((int)offset, n).CopyTo(buffer);
                    return n;
                }
            }
        }

        public int VectorCalls;

        public unsafe long ReadVector(ReadOnlySpan<VhostCompat.Samples.Block.Interop.Libc.IoVec> buffers, long offset, bool noWait)
        {
            lock (Calls)
            {
                int want = 0;
                foreach (var v in buffers)
                {
                    want += (int)v.Length;
                }

                Calls.Add((true, offset, want, noWait));
                VectorCalls++;
                long cap = Next(noWait) ?? long.MaxValue;
                if (cap <= 0)
                {
                    return cap;
                }

                long done = 0;
                foreach (var v in buffers)
                {
                    int n = (int)Math.Min(Math.Min((long)v.Length, cap - done), Math.Max(0, Bytes.Length - offset - done));
                    Bytes.AsSpan((int)(offset + done), n).CopyTo(new Span<byte>(v.Base, n));
                    done += n;
                }

                return done;
            }
        }

        public long Write(ReadOnlySpan<byte> buffer, long offset, bool noWait)
        {
            lock (Calls)
            {
                Calls.Add((false, offset, buffer.Length, noWait));
                long cap = Next(noWait) ?? long.MaxValue;
                if (cap <= 0)
                {
                    return cap;
                }
                else
                {
                    int n = (int)Math.Min(buffer.Length, cap);
                    buffer[..n].CopyTo(Bytes.AsSpan((int)offset));
                    return n;
                }
            }
        }

        private long? Next(bool noWait) =>
            noWait && NoWaitError != 0 ? -NoWaitError : Script.Count > 0 ? Script.Dequeue() : null;
    }

    [Fact]
    public void ReadFully_continues_after_short_reads_and_EINTR_and_reads_zeros_past_the_end()
    {
        var f = new FakeImage(10_000);
        new Random(1).NextBytes(f.Bytes);
        f.Script.Enqueue(100);        // short
        f.Script.Enqueue(-EINTR);     // interrupted: retried
        f.Script.Enqueue(1000);
        var buffer = new byte[4096];
        buffer.AsSpan().Fill(0xEE);

        BlockTransfer.ReadFully(f, buffer, 8192, noWait: false).Should().Be(BlockTransfer.Done);

        buffer.AsSpan(0, 10_000 - 8192).ToArray().Should().Equal(f.Bytes[8192..]);
        buffer.AsSpan(10_000 - 8192).ToArray().Should().OnlyContain(b => b == 0, "the disk reads zeros past the image's end");
        f.Calls.Select(c => c.Offset).Should().Equal(8192, 8292, 8292, 9292, 10000);
    }

    [Fact]
    public void WriteFully_continues_after_short_writes_and_EINTR_and_fails_on_errors_and_no_progress()
    {
        var f = new FakeImage(8192);
        var data = Enumerable.Range(0, 4096).Select(i => (byte)i).ToArray();
        f.Script.Enqueue(1);
        f.Script.Enqueue(-EINTR);
        f.Script.Enqueue(4000);
        BlockTransfer.WriteFully(f, data, 4096, noWait: false).Should().Be(BlockTransfer.Done);
        f.Bytes.AsSpan(4096).ToArray().Should().Equal(data);

        f.Script.Enqueue(-EIO);
        BlockTransfer.WriteFully(f, data, 0, noWait: false).Should().Be(-EIO);
        f.Script.Enqueue(0);
        BlockTransfer.WriteFully(f, data, 0, noWait: false).Should().Be(-EIO, "a write that makes no progress must not loop");
        f.Script.Enqueue(-EAGAIN);
        BlockTransfer.WriteFully(f, data, 0, noWait: true).Should().Be(-EAGAIN);
    }

    [Fact]
    public void IoThreads_dispose_finishes_queued_operations_and_later_submissions_fail_with_EIO()
    {
        var f = new FakeImage(1 << 16);
        int woken = 0;
        var completions = new IoCompletions(() => Interlocked.Increment(ref woken));
        var threads = new IoThreads(f, 2);
        var batch = Enumerable.Range(0, 16).Select(i => Op(completions, read: true, 4096, i * 4096L)).ToList();
        threads.Submit(batch);
        threads.Dispose(); // joins: every queued operation has finished

        var done = completions.Drain();
        done.Should().HaveCount(16).And.OnlyContain(o => o.Result == BlockTransfer.Done);
        threads.Executed.Should().Be(16);
        woken.Should().BeGreaterThan(0);

        threads.Submit([Op(completions, read: false, 512, 0)]);
        completions.Drain().Should().ContainSingle().Which.Result.Should().Be(-EIO);
    }

    private static IoOperation Op(IoCompletions owner, bool read, int length, long position) =>
        new(owner) { Read = read, Buffer = new byte[length], Length = length, Position = position };

    /// <summary>Lays out request <paramref name="i"/> (descriptors 3i..3i+2): header, data (readable for OUT), status.</summary>
    private (ulong Data, ulong Status) Request(SplitRing ring, int i, uint type, ulong sector, int length)
    {
        ulong header = Data + ((ulong)i * 0x1400);
        ulong data = header + 0x100, status = header + 0x80;
        _ram.W32(header, type);
        _ram.W32(header + 4, 0);
        _ram.W64(header + 8, sector);
        _ram.Fill(status, 1, 0xFF);
        ring.Chain([3 * i, (3 * i) + 1, (3 * i) + 2], new Elem(header, 16), new Elem(data, (uint)length, Write: type == 0), new Elem(status, 1, Write: true));
        return (data, status);
    }

    private static (BlockDevice Device, SplitRing Ring, VhostCompat.Queues.SplitVirtqueue Queue, SemaphoreSlim Woken) Start(GuestRam ram, FakeImage image, int depth = 8)
    {
        var device = new BlockDevice(new SafeFileHandle(), image.Bytes.Length, readOnly: false, queues: 1, "test", depth, default, ioThreads: 1, io: image);
        var ring = new SplitRing(ram, 16);
        var queue = ring.Queue();
        var woken = new SemaphoreSlim(0);
        queue.SetWaker(() => woken.Release());
        device.OnQueueStarted(queue);
        return (device, ring, queue, woken);
    }

    [Fact]
    public void Page_cache_hits_of_one_kick_complete_inside_it_with_one_call_each()
    {
        var image = new FakeImage(1 << 20);
        new Random(2).NextBytes(image.Bytes);
        var (device, ring, queue, _) = Start(_ram, image);
        using var _d = device;
        var r0 = Request(ring, 0, 0, 8, 4096);           // read 4 KiB at 4096
        var r1 = Request(ring, 1, 1, 16, 512);           // write 512 B at 8192
        _ram.Write(r1.Data, Enumerable.Repeat((byte)0x5A, 512).ToArray());
        var r2 = Request(ring, 2, 0, 2047, 1024);        // read beyond the last sector: I/O error, nothing read
        ring.Offer(0, 3, 6);

        device.OnQueueKicked(queue);

        ring.UsedIdx.Should().Be(3, "all three are completed within the kick");
        _ram.Read(r0.Status, 1)[0].Should().Be(0);
        _ram.Read(r0.Data, 4096).Should().Equal(image.Bytes[4096..8192]);
        ring.Used(0).Should().Be((0u, 4097u));
        _ram.Read(r1.Status, 1)[0].Should().Be(0);
        image.Bytes.AsSpan(8192, 512).ToArray().Should().OnlyContain(b => b == 0x5A);
        _ram.Read(r2.Status, 1)[0].Should().Be(1);
        image.Calls.Should().HaveCount(2).And.OnlyContain(c => c.NoWait, "one RWF_NOWAIT call per valid request, none for the bad one");
        device.InlineRequests.Should().Be(2);
        device.ThreadedRequests.Should().Be(0);
    }

    [Fact]
    public void A_cached_read_goes_straight_into_the_guest_buffers_and_a_short_one_is_finished_by_copying()
    {
        var image = new FakeImage(1 << 20);
        new Random(4).NextBytes(image.Bytes);
        var (device, ring, queue, _) = Start(_ram, image);
        using var _d = device;
        // header | 1000 B + 3096 B + status in its own descriptor, then a second read of 4 KiB whose first call is short
        ulong header = Data, a = Data + 0x100, b = Data + 0x600, status = Data + 0x80;
        _ram.W32(header, 0);
        _ram.W64(header + 8, 16);
        _ram.Fill(status, 1, 0xFF);
        ring.Chain([0, 1, 2, 3], new Elem(header, 16), new Elem(a, 1000, Write: true), new Elem(b, 3096, Write: true), new Elem(status, 1, Write: true));
        var r1 = Request(ring, 2, 0, 64, 4096); // descriptors 6..8
        ring.Offer(0, 6);
        image.Script.Enqueue(-EINTR); // the first vectored call is interrupted: retried
        image.Script.Enqueue(4096);
        image.Script.Enqueue(100);    // the second request's vectored read is short: copied path reads it again

        device.OnQueueKicked(queue);

        ring.UsedIdx.Should().Be(2);
        _ram.Read(a, 1000).Concat(_ram.Read(b, 3096)).Should().Equal(image.Bytes[(16 * 512)..(16 * 512 + 4096)]);
        _ram.Read(status, 1)[0].Should().Be(0);
        ring.Used(0).Should().Be((0u, 4097u));
        _ram.Read(r1.Data, 4096).Should().Equal(image.Bytes[(64 * 512)..(64 * 512 + 4096)]);
        _ram.Read(r1.Status, 1)[0].Should().Be(0);
        image.VectorCalls.Should().Be(3, "interrupted + whole for the first request, short for the second");
        device.InlineRequests.Should().Be(2);
    }

    [Fact]
    public void EAGAIN_hands_the_request_to_an_I_O_thread_and_the_next_kick_completes_it()
    {
        var image = new FakeImage(1 << 20);
        new Random(3).NextBytes(image.Bytes);
        image.NoWaitError = EAGAIN;
        var (device, ring, queue, woken) = Start(_ram, image);
        using var _d = device;
        var r0 = Request(ring, 0, 0, 0, 4096);
        var r1 = Request(ring, 1, 1, 100, 1024);
        _ram.Write(r1.Data, Enumerable.Repeat((byte)0x33, 1024).ToArray());
        ring.Offer(0, 3);

        device.OnQueueKicked(queue);
        ring.UsedIdx.Should().Be(0, "both wait for the I/O thread");
        woken.Wait(TimeSpan.FromSeconds(30)).Should().BeTrue("the I/O thread wakes the queue");
        while (device.ThreadedRequests < 2)
        {
            device.OnQueueKicked(queue); // what the worker does when woken
            if (device.ThreadedRequests < 2)
            {
                woken.Wait(TimeSpan.FromSeconds(30)).Should().BeTrue();
            }
        }

        ring.UsedIdx.Should().Be(2);
        _ram.Read(r0.Data, 4096).Should().Equal(image.Bytes[..4096]);
        _ram.Read(r0.Status, 1)[0].Should().Be(0);
        _ram.Read(r1.Status, 1)[0].Should().Be(0);
        image.Bytes.AsSpan(100 * 512, 1024).ToArray().Should().OnlyContain(b => b == 0x33);
        device.InlineRequests.Should().Be(0);
    }

    [Fact]
    public void RWF_NOWAIT_refused_turns_the_inline_attempt_off_and_I_O_errors_give_IOERR()
    {
        var image = new FakeImage(1 << 20);
        image.NoWaitError = EOPNOTSUPP;
        image.Script.Enqueue(-EIO); // the I/O thread's first (blocking) read fails
        var (device, ring, queue, woken) = Start(_ram, image);
        using var _d = device;
        var r0 = Request(ring, 0, 0, 0, 512);
        var r1 = Request(ring, 1, 0, 8, 512);
        ring.Offer(0, 3);
        device.OnQueueKicked(queue);
        while (device.ThreadedRequests < 2)
        {
            woken.Wait(TimeSpan.FromSeconds(30)).Should().BeTrue("the I/O thread wakes the queue");
            device.OnQueueKicked(queue);
        }

        ring.UsedIdx.Should().Be(2);
        _ram.Read(r0.Status, 1)[0].Should().Be(1, "VIRTIO_BLK_S_IOERR");
        ring.Used(0).Len.Should().Be(1u, "only the status byte was written");
        _ram.Read(r1.Status, 1)[0].Should().Be(0);
        image.Calls.Count(c => c.NoWait).Should().Be(1, "after EOPNOTSUPP the worker stops trying RWF_NOWAIT");
        device.InlineRequests.Should().Be(0);
    }

    [Fact]
    public void A_request_alone_on_the_ring_is_done_on_the_worker_even_if_it_must_wait()
    {
        var image = new FakeImage(1 << 20);
        image.NoWaitError = EAGAIN;
        var (device, ring, queue, _) = Start(_ram, image);
        using var _d = device;
        var r0 = Request(ring, 0, 1, 4, 2048);
        _ram.Write(r0.Data, Enumerable.Repeat((byte)0x77, 2048).ToArray());
        ring.Offer(0);

        device.OnQueueKicked(queue);

        ring.UsedIdx.Should().Be(1, "no hand-off: nothing else could have run meanwhile");
        _ram.Read(r0.Status, 1)[0].Should().Be(0);
        image.Bytes.AsSpan(4 * 512, 2048).ToArray().Should().OnlyContain(b => b == 0x77);
        image.Calls.Should().ContainSingle().Which.NoWait.Should().BeFalse();
        device.ThreadedRequests.Should().Be(0);
        device.InlineRequests.Should().Be(1);
    }

    [Fact]
    public void Header_length_and_sector_are_checked_before_any_I_O()
    {
        var image = new FakeImage(1 << 20);
        var (device, ring, queue, _) = Start(_ram, image);
        using var _d = device;
        ulong header = Data;
        _ram.W32(header, 0);
        _ram.W64(header + 8, ulong.MaxValue / 512); // sector·512 would overflow
        _ram.Fill(header + 0x80, 1, 0xFF);
        ring.Chain([0, 1, 2], new Elem(header, 16), new Elem(header + 0x100, 4096, Write: true), new Elem(header + 0x80, 1, Write: true));
        ring.Offer(0);

        device.OnQueueKicked(queue);

        ring.UsedIdx.Should().Be(1);
        _ram.Read(header + 0x80, 1)[0].Should().Be(1);
        image.Calls.Should().BeEmpty();
        BinaryPrimitives.ReadUInt64LittleEndian(_ram.Read(header + 8, 8)).Should().Be(ulong.MaxValue / 512, "the header is only read");
    }
}
