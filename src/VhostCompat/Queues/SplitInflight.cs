using System.Runtime.CompilerServices;
using VhostCompat.Memory;

namespace VhostCompat.Queues;

/// <summary>
/// Inflight tracking for one split ring (vhost-user spec, "Inflight I/O tracking"): a chain is
/// marked in flight with a fetch counter when popped, and unmarked after its used element is
/// published, through a one-entry "last batch" so that a crash between the two is repaired at the
/// next start. The region is shared with the frontend, so it is only ever written at run time
/// (never read back); what a restarted backend finds there is validated before it is trusted.
/// </summary>
internal sealed unsafe class SplitInflight
{
    private const int VersionOffset = 8;
    private const int DescNumOffset = 10;
    private const int LastBatchHeadOffset = 12;
    private const int UsedIdxOffset = 14;
    private const ushort CurrentVersion = 1;

    private readonly byte* _region;
    private ulong _counter;
    private ushort _lastBatchHead;

    private SplitInflight(byte* region) => _region = region;

    private byte* Entry(int head) => _region + InflightArea.SplitHeaderSize + (head * InflightArea.SplitEntrySize);

    /// <summary>
    /// Opens the region of a ring of <paramref name="ringSize"/> whose used.idx is <paramref name="usedIndex"/>:
    /// initialises a fresh one, or repairs the last batch and lists the heads to resubmit in fetch order.
    /// </summary>
    public static SplitInflight? Open(nint region, int capacity, int ringSize, ushort usedIndex, out ushort[] resubmit, out string error)
    {
        resubmit = [];
        error = string.Empty;
        if (ringSize > capacity)
        {
            error = $"the inflight buffer tracks {capacity} entries per queue, the ring has {ringSize}";
            return null;
        }

        var t = new SplitInflight((byte*)region);
        byte* r = t._region;
        ushort version = Volatile.Read(ref *(ushort*)(r + VersionOffset));
        if (version == 0)
        {
            new Span<byte>(r, InflightArea.SplitHeaderSize + (ringSize * InflightArea.SplitEntrySize)).Clear();
            Unsafe.WriteUnaligned(r + DescNumOffset, (ushort)ringSize);
            Unsafe.WriteUnaligned(r + UsedIdxOffset, usedIndex);
            Volatile.Write(ref *(ushort*)(r + VersionOffset), CurrentVersion);
            return t;
        }

        if (version != CurrentVersion)
        {
            error = $"inflight region version {version} is not supported (expected {CurrentVersion})";
            return null;
        }

        ushort descNum = Unsafe.ReadUnaligned<ushort>(r + DescNumOffset);
        if (descNum != ringSize)
        {
            error = $"inflight region tracks {descNum} descriptors, the ring has {ringSize}";
            return null;
        }

        ushort lastBatchHead = Unsafe.ReadUnaligned<ushort>(r + LastBatchHeadOffset);
        if (lastBatchHead >= ringSize)
        {
            error = $"inflight last_batch_head {lastBatchHead} outside the ring of {ringSize}";
            return null;
        }

        t._lastBatchHead = lastBatchHead;
        ushort recorded = Unsafe.ReadUnaligned<ushort>(r + UsedIdxOffset);
        if (recorded != usedIndex)
        {
            // The last batch reached the used ring but not the region: its entries are no longer in flight.
            int batch = (ushort)(usedIndex - recorded);
            if (batch > ringSize)
            {
                error = $"used ring index {usedIndex} is {batch} entries past the inflight used_idx {recorded}, more than the ring size";
                return null;
            }

            int head = lastBatchHead;
            for (int k = 0; k < batch; k++)
            {
                *t.Entry(head) = 0;
                if (k + 1 < batch)
                {
                    head = Unsafe.ReadUnaligned<ushort>(t.Entry(head) + 6);
                    if (head >= ringSize)
                    {
                        error = $"inflight batch list points at entry {head}, outside the ring of {ringSize}";
                        return null;
                    }
                }
            }

            Unsafe.WriteUnaligned(r + UsedIdxOffset, usedIndex);
        }

        var pending = new List<(ulong Counter, ushort Head)>();
        for (int i = 0; i < ringSize; i++)
        {
            byte flag = *t.Entry(i);
            if (flag > 1)
            {
                error = $"inflight entry {i} has flag {flag} (0 or 1 expected)";
                return null;
            }

            if (flag == 1)
            {
                pending.Add((Unsafe.ReadUnaligned<ulong>(t.Entry(i) + 8), (ushort)i));
            }
        }

        pending.Sort();
        resubmit = pending.ConvertAll(p => p.Head).ToArray();
        t._counter = pending.Count == 0 ? 0 : pending[^1].Counter + 1;
        return t;
    }

    /// <summary>A chain was taken from the avail ring.</summary>
    public void Popped(ushort head)
    {
        byte* e = Entry(head);
        Unsafe.WriteUnaligned(e + 8, _counter++);
        Volatile.Write(ref *e, (byte)1);
    }

    /// <summary>Before its used element is written: the chain becomes the last batch.</summary>
    public void BeginPush(ushort head)
    {
        Unsafe.WriteUnaligned(Entry(head) + 6, _lastBatchHead);
        _lastBatchHead = head;
        Volatile.Write(ref *(ushort*)(_region + LastBatchHeadOffset), head);
    }

    /// <summary>After used.idx was published as <paramref name="usedIndex"/>: the chain is done.</summary>
    public void EndPush(ushort head, ushort usedIndex)
    {
        Volatile.Write(ref *Entry(head), (byte)0);
        Volatile.Write(ref *(ushort*)(_region + UsedIdxOffset), usedIndex);
    }
}
