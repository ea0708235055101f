using VhostCompat.Queues;

namespace VhostCompat.Samples.Block;

/// <summary>
/// One read or write the worker could not finish without waiting for the disk. Pooled per queue and reused, with
/// its buffer (guest memory is only touched on the worker: data is copied in before a write, out after a read).
/// </summary>
internal sealed class IoOperation(IoCompletions owner)
{
    public IoCompletions Owner { get; } = owner;

    public DescriptorChain? Chain;
    public bool Read;
    public byte[] Buffer = [];
    public int Length;
    public long Position;
    public int StatusOffset;

    /// <summary>0 or -errno, set by the I/O thread.</summary>
    public int Result;
}

/// <summary>
/// A queue's finished operations, handed back to its worker: the I/O thread adds, the worker drains. The queue is
/// woken once per empty → non-empty transition, so a batch finished together costs one wake-up.
/// </summary>
internal sealed class IoCompletions(Action wake)
{
    private readonly object _lock = new();
    private List<IoOperation> _done = new(64), _spare = new(64);

    public void Add(IoOperation op)
    {
        bool first;
        lock (_lock)
        {
            first = _done.Count == 0;
            _done.Add(op);
        }

        if (first)
        {
            wake();
        }
    }

    /// <summary>On the worker: takes everything finished so far. The list stays valid until the next call.</summary>
    public List<IoOperation> Drain()
    {
        lock (_lock)
        {
            (_done, _spare) = (_spare, _done);
            _done.Clear();
            return _spare;
        }
    }
}

/// <summary>
/// A fixed set of threads running blocking file I/O. The worker submits what one kick produced in one call (one lock,
/// one wake-up); a thread takes everything queued at once and completes each operation to its queue. Dispose lets
/// the threads finish what is queued (requests already taken from a ring), then joins them; operations submitted
/// after that fail with EIO (-5) instead of waiting for ever.
/// </summary>
internal sealed class IoThreads : IDisposable
{
    private const int EIO = 5;
    private readonly IBlockFile _file;
    private readonly Queue<IoOperation> _pending = new(256);
    private readonly Thread[] _threads;
    private bool _stopping;
    private int _idle;

    public IoThreads(IBlockFile file, int count)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        _file = file;
        _threads = new Thread[count];
        for (int i = 0; i < count; i++)
        {
            _threads[i] = new Thread(Run) { IsBackground = true, Name = $"block-io-{i}" };
            _threads[i].Start();
        }
    }

    /// <summary>Operations executed by the threads since start (a counter for the exit line and tests).</summary>
    public long Executed;

    public void Submit(List<IoOperation> batch)
    {
        if (batch.Count == 0)
        {
            return;
        }

        bool stopped;
        lock (_pending)
        {
            stopped = _stopping;
            if (!stopped)
            {
                foreach (IoOperation op in batch)
                {
                    _pending.Enqueue(op);
                }

                if (_idle > 0)
                {
                    // One sleeper per operation at most: the others stay asleep when one thread can take them all.
                    for (int i = 0; i < Math.Min(_idle, batch.Count); i++)
                    {
                        Monitor.Pulse(_pending);
                    }
                }
            }
        }

        if (stopped)
        {
            foreach (IoOperation op in batch)
            {
                op.Result = -EIO;
                op.Owner.Add(op);
            }
        }
    }

    private void Run()
    {
        var taken = new List<IoOperation>(64);
        while (true)
        {
            lock (_pending)
            {
                while (_pending.Count == 0 && !_stopping)
                {
                    _idle++;
                    Monitor.Wait(_pending);
                    _idle--;
                }

                if (_pending.Count == 0)
                {
                    return; // stopping, and nothing left to do
                }

                // Take a fair share, so that a second thread has something when a big batch arrives.
                int share = Math.Max(1, _pending.Count / (_idle + 1));
                for (int i = 0; i < share; i++)
                {
                    taken.Add(_pending.Dequeue());
                }
            }

            foreach (IoOperation op in taken)
            {
                op.Result = Execute(op);
                Interlocked.Increment(ref Executed);
                op.Owner.Add(op);
            }

            taken.Clear();
        }
    }

    private int Execute(IoOperation op)
    {
        try
        {
            return op.Read
                ? BlockTransfer.ReadFully(_file, op.Buffer.AsSpan(0, op.Length), op.Position, noWait: false)
                : BlockTransfer.WriteFully(_file, op.Buffer.AsSpan(0, op.Length), op.Position, noWait: false);
        }
        catch (OverflowException)
        {
            return -EIO;
        }
    }

    public void Dispose()
    {
        lock (_pending)
        {
            _stopping = true;
            Monitor.PulseAll(_pending);
        }

        foreach (Thread t in _threads)
        {
            if (t != Thread.CurrentThread)
            {
                t.Join();
            }
        }
    }
}
