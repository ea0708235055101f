using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using VhostCompat.Interop;
using VhostCompat.Memory;

namespace VhostCompat.Queues;

/// <summary>
/// A running virtqueue as the device sees it: pop validated descriptor chains, read and write
/// their buffers, push them back as used. Every value the guest wrote is checked; a violation
/// marks the queue broken (logged, error fd signalled, no further access to the ring) while the
/// process and every other queue keep running. Methods must be called from the queue's worker
/// thread (inside <c>VhostUserDevice.OnQueueKicked</c>) or from code serialised with it.
/// </summary>
public abstract partial class Virtqueue
{
    private readonly DescriptorChain[] _chains;
    private GuestMemoryTable _memory;
    private FileDescriptor? _call;
    private FileDescriptor? _err;
    private volatile bool _enabled;

    private protected Virtqueue(int index, int size, GuestMemoryTable memory, bool indirect, bool eventIndex)
    {
        Index = index;
        Size = size;
        _memory = memory;
        Indirect = indirect;
        EventIndex = eventIndex;
        // Chain objects are created on first use of each head: a queue that never sees traffic (most of
        // the 32 rings of a multiqueue device at start-up) costs one array, not Size chains with their segments.
        _chains = new DescriptorChain[size];
    }

    /// <summary>The queue index (net: RX = 2·pair, TX = 2·pair + 1).</summary>
    public int Index { get; }

    /// <summary>Ring size negotiated with SET_VRING_NUM.</summary>
    public int Size { get; }

    /// <summary>
    /// False while the frontend has the ring disabled (SET_VRING_ENABLE 0): the device must then
    /// process without side effects (net: consume and drop TX, never fill RX).
    /// </summary>
    public bool IsEnabled => _enabled;

    /// <summary>True once a guest violation stopped the queue; it stays so until the frontend resets it.</summary>
    public bool IsBroken => BrokenReason is not null;

    /// <summary>Why the queue broke, or null.</summary>
    public string? BrokenReason { get; private set; }

    /// <summary>Chains pushed since the queue started (a running counter for metrics and tests).</summary>
    public long CompletedChains { get; private set; }

    /// <summary>Bytes of completed chains since the queue started: the readable part plus the bytes written.</summary>
    public long CompletedBytes { get; private set; }

    private protected bool Indirect { get; }

    private protected bool EventIndex { get; }

    private protected GuestMemoryTable Memory => _memory;

    internal Action<Virtqueue, string>? OnBroken { get; set; }

    /// <summary>Pops the next available chain; false when none is available (or the queue is broken).</summary>
    public bool TryPop([NotNullWhen(true)] out DescriptorChain? chain)
    {
        chain = null;
        if (IsBroken)
        {
            return false;
        }

        if (!PopCore(out chain))
        {
            return false;
        }

        // The chain's host addresses belong to the current memory table: it must outlive the chain.
        chain.Table = _memory;
        _outstanding++;
        PoppedChains++;
        return true;
    }

    /// <summary>
    /// Returns a chain to the driver as used, with the number of bytes the device wrote into it. Inside
    /// <c>OnQueueKicked</c> for this queue the driver sees used chains in batches: every 32, when the handler returns,
    /// or at <see cref="NotifyGuest"/>, whichever comes first (a driver polling the used index pays for every update).
    /// At any other time, and with inflight tracking, the driver sees the chain when this returns.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="writtenLength"/> is negative or exceeds the chain's writable length.</exception>
    /// <exception cref="InvalidOperationException">The chain was not popped from this queue or was already pushed.</exception>
    public void Push(DescriptorChain chain, int writtenLength)
    {
        ArgumentNullException.ThrowIfNull(chain);
        if (writtenLength < 0 || writtenLength > chain.WritableLength)
        {
            throw new ArgumentOutOfRangeException(nameof(writtenLength), $"{writtenLength} outside 0..{chain.WritableLength}");
        }

        if (!chain.InFlight || chain.Head >= Size || !ReferenceEquals(_chains[chain.Head], chain))
        {
            throw new InvalidOperationException("the chain is not in flight on this queue");
        }

        chain.InFlight = false;
        try
        {
            if (!IsBroken)
            {
                PushCore(chain, (uint)writtenLength);
                CompletedChains++;
                CompletedBytes += chain.ReadableLength + (long)writtenLength;
            }
        }
        finally
        {
            Settle(chain);
        }
    }

    /// <summary>Ends the chain's claim on the memory table it was translated against.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Settle(DescriptorChain chain)
    {
        GuestMemoryTable? table = chain.Table;
        chain.Table = null;
        if (ReferenceEquals(table, _memory))
        {
            _outstanding--;
            return;
        }

        SettleRetained(table);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void SettleRetained(GuestMemoryTable? table)
    {
        for (int i = 0; i < _retained.Count; i++)
        {
            if (ReferenceEquals(_retained[i].Table, table))
            {
                if (--_retained[i].Count == 0)
                {
                    _retained[i].Table.Release();
                    _retained.RemoveAt(i);
                }

                return;
            }
        }
    }

    /// <summary>Chains popped and not pushed yet, against the current table.</summary>
    private int _outstanding;

    /// <summary>Older tables kept mapped for chains still in flight when the frontend replaced the memory.</summary>
    private readonly List<Retained> _retained = [];

    private sealed class Retained(GuestMemoryTable table, int count)
    {
        public GuestMemoryTable Table { get; } = table;

        public int Count { get; set; } = count;
    }

    /// <summary>After the queue stopped (its worker will not touch it again): lets go of tables kept for abandoned chains.</summary>
    internal void ReleaseRetained()
    {
        foreach (var r in _retained)
        {
            r.Table.Release();
        }

        _retained.Clear();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private protected DescriptorChain ChainFor(ushort head) => _chains[head] ??= new DescriptorChain(this);

    /// <summary>Latches the queue broken with a reason; signals the error fd.</summary>
    private protected bool Break(string reason)
    {
        if (BrokenReason is null)
        {
            BrokenReason = reason;
            Signal(ref _err);
            OnBroken?.Invoke(this, reason);
        }

        return false;
    }

    /// <summary>Latches the queue broken for a reason outside the ring (a failing device handler).</summary>
    internal void MarkBroken(string reason) => Break(reason);

    internal void SetEnabled(bool enabled) => _enabled = enabled;

    internal void SetCall(FileDescriptor? call) => Volatile.Write(ref _call, call);

    internal void SetErr(FileDescriptor? err) => Volatile.Write(ref _err, err);

    /// <summary>Swaps in a new memory table (worker thread only). Returns the reason if the ring no longer fits in it.</summary>
    internal string? ReplaceMemory(GuestMemoryTable table)
    {
        string? error = Translate(table);
        if (error is null)
        {
            // Chains popped under the old table keep pointers into it: keep it mapped until they are pushed.
            if (_outstanding > 0 && _memory.TryAcquire())
            {
                _retained.Add(new Retained(_memory, _outstanding));
            }

            _outstanding = 0;
            _memory = table;
        }

        return error;
    }

    /// <summary>Computes host pointers of the ring structures in <paramref name="table"/>; null on success.</summary>
    internal abstract string? Translate(GuestMemoryTable table);

    /// <summary>The value GET_VRING_BASE reports.</summary>
    internal abstract uint Base { get; }

    /// <summary>
    /// Attaches this queue's inflight region (<paramref name="capacity"/> entries) before the queue runs:
    /// a fresh region is initialised; a used one is repaired and its in-flight chains are queued for
    /// resubmission, and the ring position is taken from it. Returns the reason if the region is invalid.
    /// </summary>
    internal abstract string? AttachInflight(nint region, int capacity);

    /// <summary>Chains recovered from the inflight region and not yet handed out again.</summary>
    internal abstract int PendingResubmissions { get; }

    private protected abstract bool PopCore([NotNullWhen(true)] out DescriptorChain? chain);

    private protected abstract void PushCore(DescriptorChain chain, uint length);

    /// <summary>
    /// Asks the driver not to kick while the worker drains the ring (split: VRING_USED_F_NO_NOTIFY
    /// without EVENT_IDX; packed: device event DISABLE). <see cref="PrepareToSleep"/> turns kicks back on.
    /// </summary>
    internal abstract void SuppressKicks();

    /// <summary>True when the driver has made a chain available that was not popped yet (kicks stay as they are).</summary>
    internal abstract bool HasAvailable();

    /// <summary>
    /// Re-enables driver notifications before the worker sleeps and re-checks the ring (closing the
    /// lost-kick race). Returns true if buffers arrived meanwhile and the device should run again.
    /// </summary>
    internal abstract bool PrepareToSleep();

    /// <summary>
    /// Signals the guest (call eventfd) if chains were pushed since the last notification and the
    /// driver asked to be told (EVENT_IDX / NO_INTERRUPT are honoured); chains pushed so far become visible first.
    /// The SDK calls this after <c>OnQueueKicked</c> for the kicked queue; call it yourself after pushing to another queue.
    /// </summary>
    public void NotifyGuest()
    {
        if (IsBroken)
        {
            return;
        }

        PublishUsed();
        if (ShouldNotify())
        {
            Signal(ref _call);
        }
    }

    private protected abstract bool ShouldNotify();

    private static void Signal(ref FileDescriptor? field)
    {
        FileDescriptor? fd = Volatile.Read(ref field);
        if (fd is null)
        {
            return;
        }

        bool added = false;
        try
        {
            // AddRef keeps the fd open even if the control thread replaces and disposes it meanwhile.
            fd.DangerousAddRef(ref added);
            Libc.EventFdSignal(fd.Value);
        }
        catch (ObjectDisposedException)
        {
        }
        finally
        {
            if (added)
            {
                fd.DangerousRelease();
            }
        }
    }

    /// <summary>Walks the translated pieces of a buffer into a chain.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private protected bool AddBuffer(DescriptorChain chain, ulong gpa, uint length, bool writable)
    {
        // Fast path: the whole buffer inside one region (the normal case) needs no piecewise walk.
        if (_memory.TryTranslateGuestPhysical(gpa, length, out nint host))
        {
            return chain.Add(host, gpa, length, writable);
        }

        return AddBufferPieces(chain, gpa, length, writable);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool AddBufferPieces(DescriptorChain chain, ulong gpa, uint length, bool writable)
    {
        var state = new ChainState { Chain = chain, Writable = writable, Gpa = gpa };
        return Memory.TryTranslateGuestPhysicalPieces(gpa, length, ref state, static (ref ChainState s, nint host, ulong len) =>
        {
            bool ok = s.Chain.Add(host, s.Gpa, len, s.Writable);
            s.Gpa += len;
            return ok;
        });
    }

    // Indirect tables that cross a region boundary are copied here (allocated on first use, pinned, Size entries).
    private byte[]? _indirectCopy;

    /// <summary>
    /// Locates an indirect table of <paramref name="length"/> bytes (at most <see cref="Size"/> entries, checked by the
    /// caller). Inside one region it is read in place; across GPA-adjacent regions (a guest with several memory slots
    /// produces such tables, and their host mappings are unrelated) it is copied piecewise into a per-queue buffer,
    /// which also gives the walk a stable snapshot. False when any byte is outside guest memory.
    /// </summary>
    private protected unsafe bool TryLocateIndirectTable(ulong gpa, uint length, out byte* table)
    {
        if (Memory.TryTranslateGuestPhysical(gpa, length, out nint host))
        {
            table = (byte*)host;
            return true;
        }

        _indirectCopy ??= GC.AllocateUninitializedArray<byte>(Size * VirtqueueLayout.DescriptorSize, pinned: true);
        var copy = new TableCopy { Destination = (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_indirectCopy)), Room = (ulong)_indirectCopy.Length };
        bool ok = length <= copy.Room && Memory.TryTranslateGuestPhysicalPieces(gpa, length, ref copy, static (ref TableCopy c, nint piece, ulong n) =>
        {
            if (n > c.Room - c.Done)
            {
                return false;
            }

            Buffer.MemoryCopy((void*)piece, c.Destination + c.Done, (long)(c.Room - c.Done), (long)n);
            c.Done += n;
            return true;
        });
        table = ok ? copy.Destination : null;
        return ok;
    }

    private unsafe struct TableCopy
    {
        public byte* Destination;
        public ulong Room;
        public ulong Done;
    }

    private struct ChainState
    {
        public DescriptorChain Chain;
        public bool Writable;
        public ulong Gpa;
    }
}
