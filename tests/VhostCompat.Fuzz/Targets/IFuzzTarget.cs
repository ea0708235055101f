namespace VhostCompat.Fuzz.Targets;

/// <summary>
/// One fuzz target. <see cref="Execute"/> consumes one input; it returns normally when the code
/// under test accepted the input or rejected it in its documented way, and anything it throws is a
/// crash (an undocumented exception from the SDK, or a <see cref="FuzzFailureException"/> from an oracle).
/// </summary>
internal interface IFuzzTarget : IDisposable
{
    string Name { get; }

    void Execute(ReadOnlySpan<byte> input);

    /// <summary>How far the last input got: valid messages, chains popped, or 1 for a parsed document (0 = rejected up front).</summary>
    int Reached { get; }

    /// <summary>Valid inputs to start mutating from (also checked in under corpus/&lt;name&gt;/).</summary>
    IEnumerable<(string Name, byte[] Data)> Seeds();
}
