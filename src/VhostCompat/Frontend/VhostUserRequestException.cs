namespace VhostCompat.Frontend;

/// <summary>The backend refused a request (non-zero REPLY_ACK, empty GET_CONFIG reply) or answered it wrongly, or the connection failed.</summary>
public sealed class VhostUserRequestException : Exception
{
    /// <summary>Creates an exception for a failed request.</summary>
    public VhostUserRequestException(string request, string message)
        : base($"{request}: {message}")
    {
        Request = request;
    }

    /// <summary>Creates an exception with the default message.</summary>
    public VhostUserRequestException()
        : this("(none)", "request failed")
    {
    }

    /// <summary>Creates an exception with a message.</summary>
    public VhostUserRequestException(string message)
        : this("(none)", message)
    {
    }

    /// <summary>Creates an exception with a message and an inner exception.</summary>
    public VhostUserRequestException(string message, Exception innerException)
        : base(message, innerException)
    {
        Request = "(none)";
    }

    /// <summary>The spec name of the request that failed (e.g. <c>SET_MEM_TABLE</c>).</summary>
    public string Request { get; } = "(none)";
}
