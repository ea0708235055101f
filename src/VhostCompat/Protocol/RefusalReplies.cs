namespace VhostCompat.Protocol;

/// <summary>How a backend answers a request it refused (the connection stays up unless this says otherwise).</summary>
internal enum RefusalReply
{
    /// <summary>With NEED_REPLY a u64 of 1; without it the connection closes, since the frontend would believe the request applied.</summary>
    AckFailure,

    /// <summary>A u64 of 1 whatever the flags: the frontend waits for this request's own reply (SET_LOG_BASE under LOG_SHMFD).</summary>
    U64Failure,

    /// <summary>A zero-sized inflight description, which means "no inflight buffer": QEMU then runs without one.</summary>
    NoInflightBuffer,

    /// <summary>An empty payload: QEMU checks the size of a GET_CONFIG reply and fails the read.</summary>
    EmptyPayload,
}

/// <summary>
/// The reply policy per request for refusals, beside <see cref="PayloadRules"/> (which says what a valid request
/// looks like). Framing violations close the connection before a request is looked at; a request refused with
/// "close" by the backend closes it whatever this says.
/// </summary>
internal static class RefusalReplies
{
    /// <summary>The answer to a refused <paramref name="request"/>; <paramref name="logShmfd"/> = LOG_SHMFD was negotiated.</summary>
    public static RefusalReply For(FrontendRequest request, bool logShmfd) => request switch
    {
        FrontendRequest.SetLogBase when logShmfd => RefusalReply.U64Failure,
        FrontendRequest.GetInflightFd => RefusalReply.NoInflightBuffer,
        FrontendRequest.GetConfig => RefusalReply.EmptyPayload,
        _ => RefusalReply.AckFailure,
    };
}
