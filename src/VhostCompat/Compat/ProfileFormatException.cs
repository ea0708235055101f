namespace VhostCompat.Compat;

/// <summary>A profile text or value that breaks the profile rules. <see cref="Key"/> names the offending key when there is one.</summary>
public sealed class ProfileFormatException : FormatException
{
    /// <summary>Creates the exception.</summary>
    public ProfileFormatException()
    {
    }

    /// <summary>Creates the exception with a message.</summary>
    public ProfileFormatException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and an inner exception.</summary>
    public ProfileFormatException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Creates the exception naming the key that is wrong.</summary>
    public ProfileFormatException(string? key, string message)
        : base(key is null ? message : $"{key}: {message}")
    {
        Key = key;
    }

    /// <summary>The key that is wrong (<c>mrg_rxbuf</c>, <c>max_ring</c>, <c>type</c>, ...), or null when the problem is not tied to one key.</summary>
    public string? Key { get; }
}
