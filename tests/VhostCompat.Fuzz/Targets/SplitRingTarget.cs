using VhostCompat.Queues;

namespace VhostCompat.Fuzz.Targets;

/// <summary>
/// The split ring walker over guest memory the input controls entirely: descriptor table, avail
/// and used rings, indirect tables and buffers (see <see cref="RingInput"/> for the header).
/// Documented rejections: <see cref="ArgumentException"/> from the constructor (ring not inside
/// guest memory) and a broken queue.
/// </summary>
internal sealed class SplitRingTarget : IFuzzTarget
{
    private readonly FuzzRam _ram = new();

    public string Name => "split";

    /// <summary>Chains the last input yielded.</summary>
    public int LastChains { get; private set; }

    public int Reached => LastChains;

    public void Execute(ReadOnlySpan<byte> input)
    {
        LastChains = 0;
        var r = new RingInput(input);
        int size = 1 << (r.SizeByte % 9);
        var (desc, avail, used) = Layout(size, r);
        _ram.Load(r.Image);
        SplitVirtqueue q;
        try
        {
            q = new SplitVirtqueue(0, size, _ram.Table, FuzzRam.Ua(desc), FuzzRam.Ua(avail), FuzzRam.Ua(used), r.Base16, r.Indirect, r.EventIndex);
        }
        catch (ArgumentException)
        {
            return;
        }

        LastChains = RingExerciser.Run(q, _ram, r.Mode);
    }

    /// <summary>Back to back from the start of guest memory, or anywhere (even straddling its end) when the input says so.</summary>
    public static (ulong Desc, ulong Avail, ulong Used) Layout(int size, in RingInput r)
    {
        if (r.CustomLayout)
        {
            return (FuzzRam.Gpa + (r.Offset1 % 0x5800u), FuzzRam.Gpa + (r.Offset2 % 0x5800u), FuzzRam.Gpa + (r.Offset3 % 0x5800u));
        }

        ulong desc = FuzzRam.Gpa;
        ulong avail = desc + (16UL * (ulong)size);
        ulong used = RingInput.Align(avail + 6 + (2UL * (ulong)size), 4);
        return (desc, avail, used);
    }

    public IEnumerable<(string Name, byte[] Data)> Seeds() => RingSeeds.Split();

    public void Dispose() => _ram.Dispose();
}
