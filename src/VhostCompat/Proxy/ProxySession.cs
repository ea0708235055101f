using Microsoft.Extensions.Logging;
using VhostCompat.Compat;
using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.Proxy;

/// <summary>
/// One frontend connection forwarded to one backend connection: every request is checked by the shield, forwarded
/// with its fds (the proxy's copies are closed once the kernel has duplicated them into the backend), and its reply
/// forwarded back with its fds, the pinned answers rewritten on the way (GET_FEATURES, GET_PROTOCOL_FEATURES,
/// GET_QUEUE_NUM, GET_CONFIG). Memory, eventfds, the log, the inflight area and the backend channel go to the
/// backend untouched: no data ever passes through the proxy.
/// </summary>
internal sealed class ProxySession
{
    private readonly VhostUserConnection _frontend;
    private readonly BackendLink _backend;
    private readonly MessageShield _shield;
    private readonly ProfilePin? _pin;
    private readonly ProxyRecordKeeper? _records;
    private readonly SessionTrace? _trace;
    private readonly uint _id;
    private readonly VhostUserProxyOptions _options;
    private readonly ILogger _logger;

    public ProxySession(uint id, VhostUserConnection frontend, BackendLink backend, MessageShield shield, ProfilePin? pin, ProxyRecordKeeper? records,
        SessionTrace? trace, VhostUserProxyOptions options, ILogger logger)
    {
        _id = id;
        _frontend = frontend;
        _backend = backend;
        _shield = shield;
        _pin = pin;
        _records = records;
        _trace = trace;
        _options = options;
        _logger = logger;
    }

    /// <summary>Requests refused by the shield in this session.</summary>
    public int Refused { get; private set; }

    /// <summary>True when the session ended because the backend went away (the frontend is then closed so it reconnects).</summary>
    public bool BackendLost { get; private set; }

    /// <summary>Forwards until either side goes away or a request is refused without a way to answer it; returns why it ended.</summary>
    public async Task<string> RunAsync(CancellationToken cancellationToken)
    {
        // The backend may go away while the frontend is idle: stop waiting for the frontend then.
        using var frontendReads = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _backend.ClosedToken);
        while (true)
        {
            VhostUserMessage? message;
            try
            {
                message = await _frontend.ReceiveAsync(frontendReads.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                BackendLost = true;
                return $"backend: {_backend.CloseReason}";
            }
            catch (VhostUserFramingException ex)
            {
                return $"frontend framing error: {ex.Message}";
            }

            if (message is null)
            {
                return "the frontend closed the connection";
            }

            using (message)
            {
                string? end = await ForwardAsync(message, cancellationToken).ConfigureAwait(false);
                if (end is not null)
                {
                    return end;
                }
            }
        }
    }

    private async Task<string?> ForwardAsync(VhostUserMessage message, CancellationToken cancellationToken)
    {
        MessageHeader h = message.Header;
        var request = (FrontendRequest)h.Request;
        string name = RequestNames.Name(h.Request);
        bool ownReply = _shield.HasOwnReply(request);
        string? refusal = _shield.Check(message);
        _trace?.Record(TraceDirection.FrontendToBackend, _id, h, message.Payload, Fds(message), refusal is null ? null : "refused by the shield: " + refusal);
        if (refusal is not null)
        {
            Refused++;
            Metrics.ProxyShieldRefusals.Add(1, new KeyValuePair<string, object?>("vhostcompat.request", name));
            Log.ProxyShieldRefused(_logger, name, refusal);
            if (h.NeedReply && !ownReply)
            {
                _frontend.Send(h.Request, MessageHeader.ReplyFlags, U64Payload.Encode(1));
                return null;
            }

            return $"{name} refused by the shield: {refusal}";
        }

        int[] fds = Fds(message);
        try
        {
            _backend.Connection.SendRaw(MessageFraming.Encode(h.Request, h.Flags, message.Payload), fds);
        }
        catch (IOException ex)
        {
            BackendLost = true;
            return $"backend: {ex.Message}";
        }

        if (ownReply || h.NeedReply)
        {
            VhostUserMessage reply;
            try
            {
                reply = await _backend.ReadReplyAsync(h.Request, _options.BackendReplyTimeout, cancellationToken).ConfigureAwait(false);
            }
            catch (IOException ex)
            {
                BackendLost = true;
                return $"backend: {ex.Message}";
            }

            using (reply)
            {
                if (Rewrite(request, ownReply, message.Payload, reply) is not { } payload)
                {
                    return $"backend: malformed {name} reply ({reply.Payload.Length} bytes)";
                }

                _trace?.Record(TraceDirection.BackendToFrontend, _id, reply.Header, payload, Fds(reply), payload.AsSpan().SequenceEqual(reply.Payload) ? null : "rewritten by the proxy");
                _frontend.SendRaw(MessageFraming.Encode(reply.Header.Request, reply.Header.Flags, payload), Fds(reply));
                Observe(request, message.Payload, payload);
            }
        }
        else
        {
            Observe(request, message.Payload, []);
        }

        return null;
    }

    // The reply the frontend sees: the pin's answers, and only the protocol features the proxy carries.
    private byte[]? Rewrite(FrontendRequest request, bool ownReply, byte[] requestPayload, VhostUserMessage reply)
    {
        byte[] p = reply.Payload;
        if (!ownReply)
        {
            return p.Length == U64Payload.Size ? p : null;
        }

        switch (request)
        {
            case FrontendRequest.GetFeatures when p.Length == U64Payload.Size:
                return U64Payload.Encode(U64Payload.Read(p) & _shield.OfferedFeatures);
            case FrontendRequest.GetProtocolFeatures when p.Length == U64Payload.Size:
                return U64Payload.Encode(U64Payload.Read(p) & _shield.OfferedProtocol);
            case FrontendRequest.GetQueueNum when p.Length == U64Payload.Size:
                return _pin is null ? p : U64Payload.Encode(Math.Min(U64Payload.Read(p), _pin.QueueNumReply));
            case FrontendRequest.GetMaxMemSlots when p.Length == U64Payload.Size:
                _shield.MaxMemorySlots = (int)Math.Clamp(U64Payload.Read(p), 1, 509);
                return p;
            case FrontendRequest.GetConfig:
            {
                if (p.Length == 0)
                {
                    return p; // The backend's refusal: an empty payload, as QEMU expects.
                }

                var asked = DeviceConfigHeader.Read(requestPayload);
                if (p.Length != requestPayload.Length || DeviceConfigHeader.Read(p) is var got && (got.Offset != asked.Offset || got.Size != asked.Size))
                {
                    return null;
                }

                if (_pin is null)
                {
                    return p;
                }

                byte[] copy = (byte[])p.Clone();
                _pin.PatchConfig((int)asked.Offset, copy.AsSpan(DeviceConfigHeader.Length));
                return copy;
            }

            case FrontendRequest.GetFeatures or FrontendRequest.GetProtocolFeatures or FrontendRequest.GetQueueNum or FrontendRequest.GetMaxMemSlots:
                return null;
            default:
                return p;
        }
    }

    // Record keeping after a request went through: the interface is complete at DRIVER_OK, or — with a frontend that
    // does not send the status (STATUS not acked) — once features are acked and a ring is kicked.
    private void Observe(FrontendRequest request, byte[] requestPayload, byte[] replyPayload)
    {
        if (_records is null)
        {
            return;
        }

        switch (request)
        {
            case FrontendRequest.GetConfig when replyPayload.Length > DeviceConfigHeader.Length && DeviceConfigHeader.Read(requestPayload).Offset == 0:
                _records.Config = replyPayload[DeviceConfigHeader.Length..];
                break;
            case FrontendRequest.SetStatus when (U64Payload.Read(requestPayload) & (ulong)DeviceStatus.DriverOk) != 0:
            case FrontendRequest.SetVringKick when _shield.FeaturesAcked && (_shield.AckedProtocol & (ulong)VhostUserProtocolFeatures.Status) == 0:
                _records.Save(_shield, _logger);
                break;
        }

    }

    private static int[] Fds(VhostUserMessage message)
    {
        if (message.FdCount == 0)
        {
            return [];
        }

        var fds = new int[message.FdCount];
        for (int i = 0; i < fds.Length; i++)
        {
            fds[i] = message.PeekFd(i)?.Value ?? -1;
        }

        return fds;
    }
}
