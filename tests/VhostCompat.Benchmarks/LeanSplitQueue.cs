using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using VhostCompat.Memory;
using VhostCompat.Queues;

namespace VhostCompat.Benchmarks;

/// <summary>
/// EXPERIMENT, not SDK code: the SDK's split-ring pop/walk/push with the same guest-input validation, but
/// (1) ring positions masked instead of '%' (split rings are a power of 2 in size),
/// (2) buffers translated by an inlined scan over a flat struct array of regions, starting at the region that
///     matched last, with no delegate call per buffer (the SDK path goes through a static lambda + ChainState
///     for every descriptor); ranges spanning regions still fall back to the SDK's piecewise translation,
/// (3) one 8-byte store per used element, and the used index published once per burst (<see cref="Flush"/>)
///     instead of after every chain (what DPDK's vhost library does with its shadow used ring).
/// Used by <see cref="WalkerExperimentBenchmarks"/> to put numbers on the suggestions in docs/performance.md.
/// </summary>
internal sealed unsafe class LeanSplitQueue
{
    private readonly byte* _desc;
    private readonly byte* _avail;
    private readonly byte* _used;
    private readonly int _size;
    private readonly int _mask;
    private readonly Region[] _regions;
    private readonly GuestMemoryTable _table;
    private readonly DescriptorChain[] _chains;
    private int _lastRegion;
    private ushort _lastAvail;
    private ushort _usedIndex;

    // Ablation switches (each turns ONE of the three changes back into what the SDK does).
    private readonly bool _modulo;
    private readonly bool _delegateTranslate;
    private readonly bool _publishPerChain;

    public LeanSplitQueue(SplitRing ring, bool modulo = false, bool delegateTranslate = false, bool publishPerChain = false)
    {
        _modulo = modulo;
        _delegateTranslate = delegateTranslate;
        _publishPerChain = publishPerChain;
        _desc = ring.Desc;
        _avail = ring.Avail;
        _used = ring.Used;
        _size = ring.Size;
        _mask = ring.Size - 1;
        _table = ring.Ram.Table;
        _regions = [.. _table.Regions.Select(r => new Region(r.GuestPhysicalAddress, r.Size, r.Base))];
        _chains = new DescriptorChain[_size];
        for (int i = 0; i < _size; i++)
        {
            // The constructor is internal and takes the owning queue (used only to mark device writes dirty, which this
            // experiment never does): no owner.
            _chains[i] = (DescriptorChain)Activator.CreateInstance(
                typeof(DescriptorChain), System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.NonPublic, null, [null], null)!;
        }
    }

    public string? BrokenReason { get; private set; }

    private readonly record struct Region(ulong Gpa, ulong Size, nint Base);

    public bool TryPop([NotNullWhen(true)] out DescriptorChain? chain)
    {
        chain = null;
        if (BrokenReason is not null)
        {
            return false;
        }

        ushort availIndex = Volatile.Read(ref *(ushort*)(_avail + 2));
        ushort pending = (ushort)(availIndex - _lastAvail);
        if (pending == 0)
        {
            return false;
        }

        if (pending > _size)
        {
            return Break("avail index too far ahead");
        }

        ushort head = Unsafe.ReadUnaligned<ushort>(_avail + 4 + (2 * (_modulo ? _lastAvail % _size : _lastAvail & _mask)));
        if (head >= _size)
        {
            return Break("head outside the ring");
        }

        DescriptorChain c = _chains[head];
        if (c.InFlight)
        {
            return Break("head in flight");
        }

        c.Reset();
        c.Head = head;
        if (!Walk(c, head))
        {
            return false;
        }

        _lastAvail++;
        c.InFlight = true;
        chain = c;
        return true;
    }

    private bool Walk(DescriptorChain chain, ushort head)
    {
        byte* table = _desc;
        int tableSize = _size;
        int index = head;
        int count = 0;
        int buffers = 0;
        bool indirect = false;
        bool sawWritable = false;
        while (true)
        {
            if (++count > tableSize)
            {
                return Break("loop");
            }

            byte* d = table + (index * VirtqueueLayout.DescriptorSize);
            ulong addr = Unsafe.ReadUnaligned<ulong>(d);
            uint len = Unsafe.ReadUnaligned<uint>(d + 8);
            ushort flags = Unsafe.ReadUnaligned<ushort>(d + 12);
            ushort next = Unsafe.ReadUnaligned<ushort>(d + 14);
            if ((flags & VirtqueueLayout.DescFlagIndirect) != 0)
            {
                if (indirect || (flags & VirtqueueLayout.DescFlagNext) != 0
                    || len == 0 || len % VirtqueueLayout.DescriptorSize != 0 || len / VirtqueueLayout.DescriptorSize > (uint)_size)
                {
                    return Break("bad indirect descriptor");
                }

                if (!TranslateOne(addr, len, out nint t))
                {
                    return Break("indirect table outside guest memory");
                }

                table = (byte*)t;
                tableSize = (int)(len / VirtqueueLayout.DescriptorSize);
                indirect = true;
                index = 0;
                count = 0;
                continue;
            }

            bool writable = (flags & VirtqueueLayout.DescFlagWrite) != 0;
            if (!writable && sawWritable)
            {
                return Break("readable after writable");
            }

            sawWritable |= writable;
            if (++buffers > _size)
            {
                return Break("chain longer than the ring");
            }

            if (_delegateTranslate)
            {
                if (!AddPieces(chain, addr, len, writable))
                {
                    return Break("buffer outside guest memory");
                }
            }
            else if (len != 0)
            {
                if (TranslateOne(addr, len, out nint host))
                {
                    if (!chain.Add(host, addr, len, writable))
                    {
                        return Break("chain too long");
                    }
                }
                else if (!AddPieces(chain, addr, len, writable))
                {
                    return Break("buffer outside guest memory");
                }
            }

            if ((flags & VirtqueueLayout.DescFlagNext) == 0)
            {
                return true;
            }

            if (next >= tableSize)
            {
                return Break("next outside the table");
            }

            index = next;
        }
    }

    /// <summary>Whole range inside one region; tries the region that matched last time first.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TranslateOne(ulong gpa, ulong length, out nint host)
    {
        Region[] regions = _regions;
        int i = _lastRegion;
        for (int n = 0; n < regions.Length; n++)
        {
            ref readonly Region r = ref regions[i];
            ulong offset = gpa - r.Gpa; // wraps to a huge value when gpa < r.Gpa
            if (offset < r.Size && length <= r.Size - offset)
            {
                _lastRegion = i;
                host = r.Base + (nint)offset;
                return true;
            }

            if (++i == regions.Length)
            {
                i = 0;
            }
        }

        host = 0;
        return false;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool AddPieces(DescriptorChain chain, ulong gpa, uint length, bool writable)
    {
        var state = (chain, writable, gpa);
        return _table.TryTranslateGuestPhysicalPieces(gpa, length, ref state, static (ref (DescriptorChain Chain, bool Writable, ulong Gpa) s, nint host, ulong len) =>
        {
            bool ok = s.Chain.Add(host, s.Gpa, len, s.Writable);
            s.Gpa += len;
            return ok;
        });
    }

    /// <summary>Writes the used element; the index becomes visible to the driver at <see cref="Flush"/>.</summary>
    public void Push(DescriptorChain chain, uint length)
    {
        if (!chain.InFlight || chain.Head >= _size || !ReferenceEquals(_chains[chain.Head], chain))
        {
            throw new InvalidOperationException("the chain is not in flight on this queue");
        }

        chain.InFlight = false;
        Unsafe.WriteUnaligned(_used + 4 + (8 * (_modulo ? _usedIndex % _size : _usedIndex & _mask)), chain.Head | ((ulong)length << 32));
        _usedIndex++;
        if (_publishPerChain)
        {
            Flush();
        }
    }

    /// <summary>Publishes every element pushed so far (release store of used->idx).</summary>
    public void Flush() => Volatile.Write(ref *(ushort*)(_used + 2), _usedIndex);

    private bool Break(string reason)
    {
        BrokenReason ??= reason;
        return false;
    }
}
