namespace VhostCompat.Compat;

/// <summary>
/// A backend cannot present the interface it must: the pinned profile does not fit the build, it
/// contradicts the stored acked-state record, or the build can no longer honour that record (a
/// downgrade). <see cref="Problems"/> lists every reason, feature bits by name.
/// </summary>
public sealed class CompatibilityException : Exception
{
    /// <summary>Creates the exception.</summary>
    public CompatibilityException()
    {
    }

    /// <summary>Creates the exception with a message.</summary>
    public CompatibilityException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and an inner exception.</summary>
    public CompatibilityException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Creates the exception with a summary and every problem.</summary>
    public CompatibilityException(string summary, IReadOnlyList<string> problems)
        : base(summary + ": " + string.Join("; ", problems ?? []))
    {
        Problems = problems ?? [];
    }

    /// <summary>Every reason, one sentence each.</summary>
    public IReadOnlyList<string> Problems { get; } = [];
}
