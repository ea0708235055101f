using VhostCompat.Fuzz.Targets;

namespace VhostCompat.Fuzz;

/// <summary>The targets by name.</summary>
internal static class FuzzTargets
{
    public static readonly string[] Names = ["message", "split", "packed", "inflight", "compat"];

    public static IFuzzTarget? Create(string name) => name switch
    {
        "message" => new MessageTarget(),
        "split" => new SplitRingTarget(),
        "packed" => new PackedRingTarget(),
        "inflight" => new InflightTarget(),
        "compat" => new CompatTarget(),
        _ => null,
    };
}
