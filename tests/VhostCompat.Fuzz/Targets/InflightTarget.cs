using VhostCompat.Memory;
using VhostCompat.Queues;

namespace VhostCompat.Fuzz.Targets;

/// <summary>
/// The restart path: a queue is started on an inflight region whose content a previous process
/// (or a hostile frontend) left behind, validates it (<see cref="SplitInflight"/>,
/// <see cref="PackedInflight"/>), resubmits what it lists and then runs normally. Input: the
/// <see cref="RingInput"/> header (byte 1 bit 7 = packed), one byte selecting the capacity the
/// buffer was created for (ring size − 1 .. + 2), the queue region
/// (<see cref="InflightArea.QueueRegionSize"/> bytes), then the guest memory image. Documented
/// rejections: an error string from <c>AttachInflight</c>, the constructor's
/// <see cref="ArgumentException"/>, and a broken queue.
/// </summary>
internal sealed class InflightTarget : IFuzzTarget
{
    private readonly FuzzRam _ram = new();
    private readonly InflightRegion _region = new();

    public string Name => "inflight";

    /// <summary>Chains the last input yielded.</summary>
    public int LastChains { get; private set; }

    public int Reached => LastChains;

    public void Execute(ReadOnlySpan<byte> input)
    {
        LastChains = 0;
        if (input.Length <= RingInput.HeaderSize)
        {
            return;
        }

        var header = input[..RingInput.HeaderSize];
        bool packed = (header[1] & 0x80) != 0;
        var probe = new RingInput(header);
        int size = packed ? 1 + probe.SizeByte : 1 << (probe.SizeByte % 9);
        int capacity = Math.Max(1, size - 1 + (input[RingInput.HeaderSize] % 4));
        int regionLength = (int)InflightArea.QueueRegionSize((ushort)capacity, packed);
        var rest = input[(RingInput.HeaderSize + 1)..];
        _region.Load(rest, regionLength);
        var image = rest.Length > regionLength ? rest[regionLength..] : [];
        var r = new RingInput([.. header, .. image]);
        _ram.Load(r.Image);

        Virtqueue q;
        try
        {
            q = Create(size, packed, r);
        }
        catch (ArgumentException)
        {
            return;
        }

        if (q.AttachInflight(_region.Address, capacity) is not null)
        {
            _region.CheckGuards();
            return;
        }

        LastChains = RingExerciser.Run(q, _ram, r.Mode);
        _region.CheckGuards();
    }

    private Virtqueue Create(int size, bool packed, in RingInput r)
    {
        if (packed)
        {
            var (ring, driver, device) = PackedRingTarget.Layout(size, r);
            return new PackedVirtqueue(0, size, _ram.Table, FuzzRam.Ua(ring), FuzzRam.Ua(driver), FuzzRam.Ua(device), r.Base32, r.Indirect, r.EventIndex);
        }

        var (desc, avail, used) = SplitRingTarget.Layout(size, r);
        return new SplitVirtqueue(0, size, _ram.Table, FuzzRam.Ua(desc), FuzzRam.Ua(avail), FuzzRam.Ua(used), r.Base16, r.Indirect, r.EventIndex);
    }

    /// <summary>
    /// Regions a real backend leaves behind: each ring seed is run with a fresh region, some chains are
    /// pushed and the rest (at least one) left in flight (a crash), and the region and guest memory are saved as found.
    /// </summary>
    public IEnumerable<(string Name, byte[] Data)> Seeds()
    {
        foreach (var (name, data, packed) in RingSeeds.Split().Select(s => (s.Name, s.Data, false)).Concat(RingSeeds.Packed().Select(s => (s.Name, s.Data, true))))
        {
            var header = data[..RingInput.HeaderSize].ToArray();
            if (packed)
            {
                header[1] |= 0x80;
            }

            var r = new RingInput([.. header, .. data[RingInput.HeaderSize..]]);
            int size = packed ? 1 + r.SizeByte : 1 << (r.SizeByte % 9);
            int regionLength = (int)InflightArea.QueueRegionSize((ushort)size, packed);
            _region.Load([], regionLength);
            _ram.Load(r.Image);
            var q = Create(size, packed, r);
            if (q.AttachInflight(_region.Address, size) is { } error)
            {
                throw new InvalidOperationException(error);
            }

            var popped = new List<DescriptorChain>();
            while (q.TryPop(out var c))
            {
                popped.Add(c);
            }

            // Complete one chain if there are several, so every seed leaves at least one to resubmit.
            if (popped.Count > 1)
            {
                q.Push(popped[0], 0);
            }

            // capacity byte 1 = exactly the ring size
            yield return ("inflight-" + name, [.. header, 1, .. _region.Snapshot(), .. _ram.Image().AsSpan().TrimEnd((byte)0)]);
        }
    }

    public void Dispose() => _ram.Dispose();
}
