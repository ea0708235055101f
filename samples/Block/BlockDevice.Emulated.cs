using System.Buffers.Binary;
using System.Buffers;
using VhostCompat.Queues;

namespace VhostCompat.Samples.Block;

/// <summary>The emulated slow storage of the Block sample: <c>--io-latency-ms</c> and the held-request stall.</summary>
internal sealed partial class BlockDevice
{
    /// <summary>
    /// Raised (on a thread-pool thread) each time a read or write starts waiting because requests are held:
    /// the queue index and how many reads and writes of that queue are now held.
    /// </summary>
    public event Action<int, long, long>? Held;

    /// <summary>
    /// Emulates a storage stall: from now on, asynchronous reads and writes wait before doing their I/O, so they
    /// stay in flight (taken from the ring, not completed) until <see cref="ReleaseRequests"/>. A crash test kills
    /// the process once the <see cref="Held"/> counts say what it needs, instead of hoping a timed kill finds some.
    /// </summary>
    public void HoldRequests() =>
        Interlocked.CompareExchange(ref _hold, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously), null);

    /// <summary>Ends a stall started by <see cref="HoldRequests"/>: every held request proceeds.</summary>
    public void ReleaseRequests() => Interlocked.Exchange(ref _hold, null)?.TrySetResult();

    /// <summary>One read or write in flight: the chain, and the pooled buffer the host I/O uses.</summary>
    private sealed class Operation(DescriptorChain chain, bool read, byte[] buffer, int length, long position, int statusOffset)
    {
        public DescriptorChain Chain { get; } = chain;

        public bool Read { get; } = read;

        public byte[] Buffer { get; } = buffer;

        public int Length { get; } = length;

        public long Position { get; } = position;

        public int StatusOffset { get; } = statusOffset;

        public byte Status { get; set; }
    }

    /// <summary>
    /// Emulated slow storage (<c>--io-latency-ms</c>, <see cref="HoldRequests"/>): a valid read or write runs as a Task
    /// on the thread pool, waiting first; false for anything to be served synchronously. Not the fast path: a Task,
    /// a closure and a pooled buffer per request, kept because a crash test needs many requests visibly in flight.
    /// </summary>
    private bool TryStartEmulated(Virtqueue queue, QueueState state, DescriptorChain chain)
    {
        Span<byte> header = stackalloc byte[HeaderLength];
        if (chain.WritableLength < 1 || chain.ReadReadable(0, header) != HeaderLength)
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
            return false; // flush, get-id, discard, and every error status: synchronous
        }

        byte[] buffer = ArrayPool<byte>.Shared.Rent(Math.Max(length, 1));
        if (!read)
        {
            chain.ReadReadable(HeaderLength, buffer.AsSpan(0, length)); // guest memory is read here, on the worker
        }

        var op = new Operation(chain, read, buffer, length, (long)(sector * SectorSize), statusOffset);
        state.InFlight++;
        _ = Task.Run(async () =>
        {
            if (_latency > TimeSpan.Zero)
            {
                await Task.Delay(_latency).ConfigureAwait(false);
            }

            if (Volatile.Read(ref _hold) is { } hold)
            {
                await WaitWhileHeldAsync(queue.Index, op.Read, hold.Task).ConfigureAwait(false);
            }

            try
            {
                if (op.Read)
                {
                    int done = 0;
                    while (done < op.Length)
                    {
                        int n = RandomAccess.Read(_file, op.Buffer.AsSpan(done, op.Length - done), op.Position + done);
                        if (n == 0)
                        {
                            op.Buffer.AsSpan(done, op.Length - done).Clear();
                            break;
                        }

                        done += n;
                    }
                }
                else
                {
                    RandomAccess.Write(_file, op.Buffer.AsSpan(0, op.Length), op.Position);
                }

                op.Status = StatusOk;
            }
            catch (IOException)
            {
                op.Status = StatusIoErr;
            }

            state.Emulated.Enqueue(op);
            queue.Wake();
        });
        return true;
    }

    private async Task WaitWhileHeldAsync(int queue, bool read, Task released)
    {
        long[] counts = read ? _heldReads : _heldWrites;
        Interlocked.Increment(ref counts[queue]);
        Held?.Invoke(queue, Interlocked.Read(ref _heldReads[queue]), Interlocked.Read(ref _heldWrites[queue]));
        await released.ConfigureAwait(false);
        Interlocked.Decrement(ref counts[queue]);
    }

    /// <summary>On the worker: copies read data into the guest, writes the status, completes the chain.</summary>
    private void CompleteEmulated(Virtqueue queue, Operation op)
    {
        int data = 0;
        if (op.Status == StatusOk && op.Read)
        {
            op.Chain.WriteWritable(0, op.Buffer.AsSpan(0, op.Length));
            data = op.Length;
            Interlocked.Add(ref BytesRead, op.Length);
        }
        else if (op.Status == StatusOk)
        {
            Interlocked.Add(ref BytesWritten, op.Length);
        }

        ArrayPool<byte>.Shared.Return(op.Buffer);
        queue.Push(op.Chain, Status(op.Chain, op.StatusOffset, op.Status, data));
        Interlocked.Increment(ref Requests);
    }

}
