namespace VhostCompat.Fuzz;

/// <summary>An oracle of a fuzz target failed: always a crash, never an expected rejection.</summary>
public sealed class FuzzFailureException : Exception
{
    public FuzzFailureException()
    {
    }

    public FuzzFailureException(string message)
        : base(message)
    {
    }

    public FuzzFailureException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
