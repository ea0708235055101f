using VhostCompat.Queues;

namespace VhostCompat.Fuzz.Targets;

/// <summary>
/// The packed ring walker over guest memory the input controls: descriptor ring (flags, ids,
/// wrap bits), driver and device event areas, indirect tables and buffers. Ring size 1..256 (any
/// value, not only powers of two); bytes 2–5 are the SET_VRING_BASE value. Documented rejections:
/// <see cref="ArgumentException"/> from the constructor (base outside the ring, ring not inside
/// guest memory) and a broken queue.
/// </summary>
internal sealed class PackedRingTarget : IFuzzTarget
{
    private readonly FuzzRam _ram = new();

    public string Name => "packed";

    /// <summary>Chains the last input yielded.</summary>
    public int LastChains { get; private set; }

    public int Reached => LastChains;

    public void Execute(ReadOnlySpan<byte> input)
    {
        LastChains = 0;
        var r = new RingInput(input);
        int size = 1 + r.SizeByte;
        var (ring, driver, device) = Layout(size, r);
        _ram.Load(r.Image);
        PackedVirtqueue q;
        try
        {
            q = new PackedVirtqueue(0, size, _ram.Table, FuzzRam.Ua(ring), FuzzRam.Ua(driver), FuzzRam.Ua(device), r.Base32, r.Indirect, r.EventIndex);
        }
        catch (ArgumentException)
        {
            return;
        }

        LastChains = RingExerciser.Run(q, _ram, r.Mode);
    }

    public static (ulong Ring, ulong Driver, ulong Device) Layout(int size, in RingInput r)
    {
        if (r.CustomLayout)
        {
            return (FuzzRam.Gpa + (r.Offset1 % 0x5800u), FuzzRam.Gpa + (r.Offset2 % 0x5800u), FuzzRam.Gpa + (r.Offset3 % 0x5800u));
        }

        ulong ring = FuzzRam.Gpa;
        ulong driver = ring + (16UL * (ulong)size);
        return (ring, driver, driver + 4);
    }

    public IEnumerable<(string Name, byte[] Data)> Seeds() => RingSeeds.Packed();

    public void Dispose() => _ram.Dispose();
}
