using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using VhostCompat.Queues;
using VhostCompat.Samples.Block.Interop;

namespace VhostCompat.Samples.Block;

/// <summary>
/// The request path of the Block sample. Per kick the worker takes every available request (up to the queue depth):
/// a read or write whose data is in the host page cache is done right there, one system call with RWF_NOWAIT per
/// request (a read as one preadv2 straight into the chain's guest buffers; a write from a copy), and pushed; one that
/// would wait for the disk (EAGAIN, or every write on file systems that refuse RWF_NOWAIT for them, like ext4) goes
/// to a small fixed set of I/O threads, submitted with the kick's other such requests in one hand-off, and is pushed
/// when the worker next runs. The SDK signals the guest once per kick. Nothing is allocated per request in steady state.
/// </summary>
internal sealed partial class BlockDevice
{
    private const int EAGAIN = Libc.EAGAIN;

    private readonly IBlockFile _io;
    private readonly IoThreads? _threads;

    // RWF_NOWAIT works on this file (cleared when the kernel or file system refuses the flag: EOPNOTSUPP).
    private bool _noWaitRead = true, _noWaitWrite = true;

    /// <summary>Reads and writes finished on the worker without waiting, and those done by the I/O threads.</summary>
    public long InlineRequests, ThreadedRequests;

    /// <summary>Per running queue (worker only, except <see cref="IoCompletions"/>).</summary>
    private sealed class QueueState(Virtqueue queue)
    {
        public ConcurrentQueue<Operation> Emulated { get; } = new();

        public IoCompletions Completions { get; } = new(queue.Wake);

        public Stack<IoOperation> Free { get; } = new();

        public List<IoOperation> Batch { get; } = new(32);

        /// <summary>Operations out on I/O threads or the emulated path.</summary>
        public int InFlight;
    }

    public override void OnQueueStarted(Virtqueue queue) => _running[queue] = new QueueState(queue);

    // Operations still running are abandoned: their chains stay recorded in the inflight buffer, and the next
    // start of this queue (a reconnect, a restarted process) hands them out again. They finish into the old state.
    public override void OnQueueStopped(Virtqueue queue) => _running.TryRemove(queue, out _);

    public override void OnQueueKicked(Virtqueue queue)
    {
        _running.TryGetValue(queue, out QueueState? state);
        if (state is not null)
        {
            while (state.Emulated.TryDequeue(out Operation? done))
            {
                state.InFlight--;
                CompleteEmulated(queue, done);
            }

            foreach (IoOperation done in state.Completions.Drain())
            {
                state.InFlight--;
                CompleteThreaded(queue, state, done);
            }
        }

        DescriptorChain? next = null;
        while (next is not null || ((state is null || state.InFlight < _depth) && queue.TryPop(out next)))
        {
            DescriptorChain chain = next!;
            next = null;
            CountResubmitted(chain);
            if (_depth > 1 && state is not null)
            {
                // Alone: nothing in flight, nothing else queued in this kick and the ring has nothing more now. Then
                // waiting for the disk here costs no other request anything, and a hand-off to a thread and back
                // (two wake-ups) is pure overhead; ext4 refuses RWF_NOWAIT for buffered writes, so QD1 writes need this.
                bool alone = state.InFlight == 0 && state.Batch.Count == 0 && !queue.TryPop(out next);
                if (TryStart(queue, state, chain, alone))
                {
                    continue;
                }
            }

            int written = Serve(chain);
            queue.Push(chain, written);
            Interlocked.Increment(ref Requests);
        }

        if (state is not null && state.Batch.Count > 0)
        {
            _threads!.Submit(state.Batch);
            state.Batch.Clear();
        }
    }

    private void CountResubmitted(DescriptorChain chain)
    {
        if (chain.IsResubmitted)
        {
            // Reads and writes are idempotent: executing an interrupted request again is exactly right.
            Interlocked.Increment(ref Resubmitted);
        }
    }

    /// <summary>
    /// A valid read or write: done here if the page cache has it (or, <paramref name="alone"/>, even if it has to
    /// wait), else queued for the I/O threads. False for
    /// everything else (flush, get-id, discard, every error status, no I/O threads), which <see cref="Serve"/> does.
    /// </summary>
    private bool TryStart(Virtqueue queue, QueueState state, DescriptorChain chain, bool alone)
    {
        if (_latency > TimeSpan.Zero || Volatile.Read(ref _hold) is not null)
        {
            return TryStartEmulated(queue, state, chain);
        }

        Span<byte> header = stackalloc byte[HeaderLength];
        if (_threads is null || chain.WritableLength < 1 || chain.ReadReadable(0, header) != HeaderLength)
        {
            return false;
        }

        uint type = BinaryPrimitives.ReadUInt32LittleEndian(header);
        ulong sector = BinaryPrimitives.ReadUInt64LittleEndian(header[8..]);
        int statusOffset = chain.WritableLength - 1;
        bool read = type == TypeIn;
        int length = read ? statusOffset : chain.ReadableLength - HeaderLength;
        if ((type != TypeIn && type != TypeOut) || (!read && _readOnly) || !InRange(sector, (ulong)length))
        {
            return false;
        }

        long position = (long)(sector * SectorSize); // InRange: ≤ capacity in bytes, which fits a long
        byte[] buffer = _buffer.Value!;
        bool staged = false;
        if (length <= buffer.Length)
        {
            bool noWait = !alone;
            if (noWait && !(read ? _noWaitRead : _noWaitWrite))
            {
                goto Threaded;
            }

            Span<byte> data = buffer.AsSpan(0, length);
            int r;
            bool direct = false;
            if (read)
            {
                r = ReadIntoGuest(chain, length, position, noWait);
                direct = r != NotDone;
                if (!direct)
                {
                    r = BlockTransfer.ReadFully(_io, data, position, noWait);
                }
            }
            else
            {
                chain.ReadReadable(HeaderLength, data); // guest memory is read here, on the worker
                staged = true;
                r = BlockTransfer.WriteFully(_io, data, position, noWait);
            }

            if (r == -Libc.EOPNOTSUPP && noWait)
            {
                if (read)
                {
                    _noWaitRead = false;
                }
                else
                {
                    _noWaitWrite = false;
                }
            }
            else if (r != -EAGAIN || !noWait)
            {
                int used = r != BlockTransfer.Done || !read ? 0 : direct ? length : chain.WriteWritable(0, data);
                Account(read, r == BlockTransfer.Done, length);
                queue.Push(chain, Status(chain, statusOffset, r == BlockTransfer.Done ? StatusOk : StatusIoErr, used));
                Interlocked.Increment(ref Requests);
                Interlocked.Increment(ref InlineRequests);
                return true;
            }
        }

    Threaded:
        IoOperation op = state.Free.Count > 0 ? state.Free.Pop() : new IoOperation(state.Completions);
        if (op.Buffer.Length < length)
        {
            op.Buffer = new byte[Math.Max(length, 4096)]; // kept with the operation: grows to the largest request once
        }

        if (!read)
        {
            if (staged)
            {
                buffer.AsSpan(0, length).CopyTo(op.Buffer);
            }
            else
            {
                chain.ReadReadable(HeaderLength, op.Buffer.AsSpan(0, length));
            }
        }

        op.Chain = chain;
        op.Read = read;
        op.Length = length;
        op.Position = position;
        op.StatusOffset = statusOffset;
        op.Result = 0;
        state.InFlight++;
        state.Batch.Add(op);
        return true;
    }

    /// <summary><see cref="ReadIntoGuest"/> did not finish the read: the copying path does it (reads are idempotent).</summary>
    private const int NotDone = 1;

    /// <summary>
    /// A read straight into the chain's guest buffers, on the worker (where they are mapped while the chain is out):
    /// one preadv2 over the writable segments, the status byte left out. <see cref="BlockTransfer.Done"/>, -EAGAIN,
    /// -errno, or <see cref="NotDone"/> for a short read (partly cached, end of file) or too many segments.
    /// </summary>
    private unsafe int ReadIntoGuest(DescriptorChain chain, int length, long position, bool noWait)
    {
        int segments = chain.WritableSegmentCount;
        if (segments > Libc.MaxIoVecs)
        {
            return NotDone;
        }

        Span<Libc.IoVec> iov = stackalloc Libc.IoVec[segments];
        int n = 0, total = 0;
        for (int i = 0; i < segments && total < length; i++)
        {
            Span<byte> segment = chain.GetWritableSegment(i);
            int take = Math.Min(segment.Length, length - total);
            iov[n++] = new Libc.IoVec { Base = Unsafe.AsPointer(ref MemoryMarshal.GetReference(segment)), Length = (nuint)take };
            total += take;
        }

        while (true)
        {
            long r = _io.ReadVector(iov[..n], position, noWait);
            if (r == -Libc.EINTR)
            {
                continue;
            }

            return r == length ? BlockTransfer.Done : r < 0 ? (int)r : NotDone;
        }
    }

    /// <summary>On the worker: copies read data into the guest, writes the status, pushes the chain.</summary>
    private void CompleteThreaded(Virtqueue queue, QueueState state, IoOperation op)
    {
        DescriptorChain chain = op.Chain!;
        op.Chain = null;
        bool ok = op.Result == BlockTransfer.Done;
        int used = ok && op.Read ? chain.WriteWritable(0, op.Buffer.AsSpan(0, op.Length)) : 0;
        Account(op.Read, ok, op.Length);
        state.Free.Push(op);
        queue.Push(chain, Status(chain, op.StatusOffset, ok ? StatusOk : StatusIoErr, used));
        Interlocked.Increment(ref Requests);
        Interlocked.Increment(ref ThreadedRequests);
    }

    private void Account(bool read, bool ok, int length)
    {
        if (ok)
        {
            Interlocked.Add(ref read ? ref BytesRead : ref BytesWritten, length);
        }
    }

    /// <summary>Stops the I/O threads once they have finished what is queued.</summary>
    public void Dispose() => _threads?.Dispose();
}
