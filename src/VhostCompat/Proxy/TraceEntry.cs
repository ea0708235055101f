namespace VhostCompat.Proxy;

/// <summary>Which way a traced message went through the proxy.</summary>
internal enum TraceDirection
{
    /// <summary>A request from the frontend (QEMU, DPDK virtio-user) to the backend. Text <c>F&gt;B</c>.</summary>
    FrontendToBackend,

    /// <summary>A reply from the backend to the frontend. Text <c>B&gt;F</c>. (Back-end channel traffic does not pass the proxy.)</summary>
    BackendToFrontend,
}

/// <summary>Everything one trace line says; built under the trace's lock and rendered as text or JSON.</summary>
internal sealed class TraceEntry
{
    /// <summary>Wall-clock time of the line (UTC).</summary>
    public DateTimeOffset Time { get; init; }

    /// <summary>Milliseconds since the session's first line.</summary>
    public double Milliseconds { get; init; }

    public uint Session { get; init; }

    /// <summary>Free-form event text; when set the line is an event and the message members are unused.</summary>
    public string? EventText { get; init; }

    /// <summary>Message number within the session (1, 2, ...).</summary>
    public long Sequence { get; init; }

    public TraceDirection Direction { get; init; }

    public uint Code { get; init; }

    public string Request { get; init; } = string.Empty;

    public uint Flags { get; init; }

    /// <summary>Payload size from the header.</summary>
    public uint Size { get; init; }

    public TraceDecoded Payload { get; init; }

    public IReadOnlyList<TraceFd> Fds { get; init; } = [];

    /// <summary>For a matched reply: the name of the request it answers.</summary>
    public string? ReplyTo { get; init; }

    /// <summary>For a matched reply: the sequence number of the request it answers.</summary>
    public long ReplyToSequence { get; init; }

    /// <summary>For a matched reply: microseconds between the request and its reply, as seen by the proxy.</summary>
    public long RoundTripMicroseconds { get; init; }

    /// <summary>For a reply that answers no pending request: why (<c>no request pending</c>, <c>pending GET_VRING_BASE#7</c>).</summary>
    public string? Unmatched { get; init; }

    /// <summary>Text the proxy added (a shield refusal, a pinned value).</summary>
    public string? Note { get; init; }

    public static string DirectionText(TraceDirection d) => d == TraceDirection.FrontendToBackend ? "F>B" : "B>F";
}
