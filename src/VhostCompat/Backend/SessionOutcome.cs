using VhostCompat.Interop;

namespace VhostCompat.Backend;

/// <summary>What the session does with a request once it was validated and applied (or refused).</summary>
internal enum OutcomeKind
{
    /// <summary>Applied; acknowledged when the frontend asked (NEED_REPLY).</summary>
    Ack,

    /// <summary>Applied, answered with a reply of its own.</summary>
    Reply,

    /// <summary>Refused; answered as <see cref="Protocol.RefusalReplies"/> says for the request.</summary>
    Reject,

    /// <summary>Refused, and the connection is closed whatever the flags: a reply would be taken for success.</summary>
    Close,
}

/// <summary>The result of one request: kind, reply payload (and fd), or the refusal's reason.</summary>
internal readonly record struct Outcome(OutcomeKind Kind, byte[] Payload, string Reason, FileDescriptor? Fd = null, bool SizeProbe = false)
{
    public static readonly Outcome Ok = new(OutcomeKind.Ack, [], string.Empty);

    public static Outcome Reply(byte[] payload) => new(OutcomeKind.Reply, payload, string.Empty);

    /// <summary>A reply carrying one fd, which is closed once sent.</summary>
    public static Outcome Reply(byte[] payload, FileDescriptor fd) => new(OutcomeKind.Reply, payload, string.Empty, fd);

    public static Outcome Reject(string reason) => new(OutcomeKind.Reject, [], reason);

    /// <summary>
    /// A ring size above the maximum: what a frontend searching for the largest size (the tool's probe) expects
    /// to hear, so it is logged at Information once per connection and at Debug afterwards, not as a warning.
    /// </summary>
    public static Outcome RejectSizeProbe(string reason) => new(OutcomeKind.Reject, [], reason, SizeProbe: true);

    public static Outcome Close(string reason) => new(OutcomeKind.Close, [], reason);
}
