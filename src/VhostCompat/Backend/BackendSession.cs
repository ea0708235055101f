using Microsoft.Extensions.Logging;
using VhostCompat.Compat;
using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.Backend;

/// <summary>
/// The backend side of one vhost-user connection: the message loop, the dispatch of each front-end request to the
/// part that owns it, and the reply. Syntax is checked by <see cref="PayloadRules"/>, state and limits by the parts:
/// <see cref="Negotiation"/> (features, status), <see cref="RingRequests"/> and <see cref="RingLifecycle"/> (rings),
/// <see cref="MemoryRequests"/> (memory table, dirty log), <see cref="ConfigRequests"/>, <see cref="StateTransfer"/>
/// and <see cref="InflightRequests"/>. Outcome policy (pinned by the integration tests):
/// <list type="bullet">
/// <item>framing violations (size above 4 KiB, bad version bits, truncated or stalled message, lost fds) close the connection;</item>
/// <item>a refused request is answered as <see cref="RefusalReplies"/> says (with NEED_REPLY: a u64 of 1) and the connection stays up;</item>
/// <item>a refused request without NEED_REPLY closes the connection, since the frontend would otherwise believe it applied;</item>
/// <item>every fd attached to a message and not kept is closed.</item>
/// </list>
/// </summary>
internal sealed class BackendSession
{
    private readonly VhostUserDevice _device;
    private readonly VhostUserBackendOptions _options;
    private readonly ILogger _logger;
    private readonly BackendCapabilities _offer;
    private readonly Negotiation _negotiation;
    private readonly RingLifecycle _rings;
    private readonly RingRequests _ringRequests;
    private readonly MemoryRequests _memory;
    private readonly ConfigRequests _config;
    private readonly StateTransfer _state;
    private readonly InflightRequests _inflight;
    private readonly SessionRecord _record;
    private readonly VhostUserWorkerPool _workers;
    private bool _ringSizeRefusalLogged;

    public BackendSession(VhostUserDevice device, VhostUserBackendOptions options, VhostUserWorkerPool workers, ILogger logger,
        ProfilePin? pin = null, Action<AckedStateRecord>? saveRecord = null, string? recordKey = null, BackendCapabilities? offer = null)
    {
        _device = device;
        _workers = workers;
        _options = options;
        _logger = logger;
        _offer = offer ?? DeviceOffer.For(DeviceCompat.Describe(device), DeviceCompat.SlotsOf(options), pin, device.Catalog);
        if (_offer.Queues is < 1 or > 255)
        {
            throw new ArgumentException($"device QueueCount {_offer.Queues} outside 1..255");
        }

        ushort maxQueueSize = (ushort)Math.Clamp(_offer.MaxQueueSize, 0, ushort.MaxValue);
        _negotiation = new Negotiation(device, _offer, logger);
        _rings = new RingLifecycle(_offer.Queues, device, _negotiation, options, workers, logger);
        _ringRequests = new RingRequests(_rings, _negotiation, device, maxQueueSize, logger);
        _memory = new MemoryRequests(_rings, _negotiation, options, logger);
        _config = new ConfigRequests(device, pin);
        _state = new StateTransfer(device, logger);
        _inflight = new InflightRequests(_rings, _negotiation, options, maxQueueSize);
        _record = new SessionRecord(device, _negotiation, _rings, _config, pin, saveRecord, recordKey, logger);
        _rings.RingStarted += _ => _record.OnRingsChanged();
    }

    internal static ulong OfferedFeatures(VhostUserDevice device) => DeviceOffer.Features(device.DeviceFeatures);

    /// <summary>GET_PROTOCOL_FEATURES: what the SDK implements, the device's own bits, and the pin's restrictions.</summary>
    internal static VhostUserProtocolFeatures OfferedProtocolFeatures(VhostUserDevice device, VhostUserBackendOptions options, ProfilePin? pin = null) =>
        DeviceOffer.ProtocolFeatures(device.ProtocolFeatures, device.StateVersion, options.OfferMemorySlots, pin);

    public ulong AckedFeatures => _negotiation.AckedFeatures;

    public ulong AckedProtocolFeatures => _negotiation.AckedProtocol;

    public DeviceStatus Status => (DeviceStatus)_negotiation.Status;

    internal Memory.GuestMemoryTable Memory => _rings.Memory;

    internal IReadOnlyList<VirtqueueSetup> Rings => _rings.Rings;

    /// <summary>Runs the message loop until the frontend disconnects, a framing error occurs, a refused request forces a close, or cancellation.</summary>
    public async Task<string> RunAsync(VhostUserConnection connection, CancellationToken cancellationToken)
    {
        try
        {
            while (true)
            {
                VhostUserMessage? message;
                try
                {
                    message = await connection.ReceiveAsync(cancellationToken).ConfigureAwait(false);
                }
                catch (VhostUserFramingException ex)
                {
                    Log.ClosingOnError(_logger, ex.Message);
                    return ex.Message;
                }

                if (message is null)
                {
                    return "frontend closed the connection";
                }

                using (message)
                {
                    string? closeReason = Process(message, connection);
                    if (closeReason is not null)
                    {
                        return closeReason;
                    }
                }
            }
        }
        catch (OperationCanceledException)
        {
            return "backend stopping";
        }
        catch (IOException ex)
        {
            Log.ClosingOnError(_logger, ex.Message);
            return ex.Message;
        }
        finally
        {
            Teardown();
        }
    }

    /// <summary>Handles one message and sends its reply. Returns a reason when the connection must close.</summary>
    internal string? Process(VhostUserMessage message, VhostUserConnection connection)
    {
        MessageHeader h = message.Header;
        string name = RequestNames.Name(h.Request);
        Log.Request(_logger, name, h.Flags, h.Size, message.FdCount);
        if (message.FdsTruncated)
        {
            string reason = $"{name}: file descriptors were truncated (MSG_CTRUNC)";
            Log.ClosingOnError(_logger, reason);
            return reason;
        }

        Outcome outcome = Handle(message);
        switch (outcome.Kind)
        {
            case OutcomeKind.Reply when outcome.Fd is { } replyFd:
                using (replyFd)
                {
                    connection.Send(h.Request, MessageHeader.ReplyFlags, outcome.Payload, [replyFd.Value]);
                }

                return null;
            case OutcomeKind.Reply:
                connection.Send(h.Request, MessageHeader.ReplyFlags, outcome.Payload);
                return null;
            case OutcomeKind.Ack:
                if (h.NeedReply)
                {
                    connection.Send(h.Request, MessageHeader.ReplyFlags, U64Payload.Encode(0));
                }

                return null;
            case OutcomeKind.Close:
            {
                Metrics.RefusedRequests.Add(1, new KeyValuePair<string, object?>("vhostcompat.request", name));
                string closing = $"{name} refused: {outcome.Reason}";
                Log.ClosingOnError(_logger, closing);
                return closing;
            }

            default:
                return Refuse(h, name, outcome, connection);
        }
    }

    private string? Refuse(MessageHeader h, string name, Outcome outcome, VhostUserConnection connection)
    {
        LogRefusal(name, outcome);
        Metrics.RefusedRequests.Add(1, new KeyValuePair<string, object?>("vhostcompat.request", name));
        switch (RefusalReplies.For((FrontendRequest)h.Request, _negotiation.Acked(VhostUserProtocolFeatures.LogShmfd)))
        {
            case RefusalReply.U64Failure:
                connection.Send(h.Request, MessageHeader.ReplyFlags, U64Payload.Encode(1));
                return null;
            case RefusalReply.NoInflightBuffer:
                connection.Send(h.Request, MessageHeader.ReplyFlags, new InflightDescriptionPayload(0, 0, 0, 0).Encode());
                return null;
            case RefusalReply.EmptyPayload:
                connection.Send(h.Request, MessageHeader.ReplyFlags, ReadOnlySpan<byte>.Empty);
                return null;
            default:
                if (h.NeedReply)
                {
                    connection.Send(h.Request, MessageHeader.ReplyFlags, U64Payload.Encode(1));
                    return null;
                }

                string close = $"{name} refused without NEED_REPLY: {outcome.Reason}";
                Log.ClosingOnError(_logger, close);
                return close;
        }
    }

    private void LogRefusal(string name, Outcome outcome)
    {
        if (!outcome.SizeProbe)
        {
            Log.Refused(_logger, name, outcome.Reason);
        }
        else if (_ringSizeRefusalLogged)
        {
            Log.RingSizeRefusedAgain(_logger, name, outcome.Reason);
        }
        else
        {
            _ringSizeRefusalLogged = true;
            Log.RingSizeRefused(_logger, name, outcome.Reason);
        }
    }

    /// <summary>Validates and applies one request; does not send anything.</summary>
    internal Outcome Handle(VhostUserMessage message)
    {
        MessageHeader h = message.Header;
        if (h.IsReply)
        {
            return Outcome.Reject("reply flag set on a request");
        }

        if ((h.Flags & MessageHeader.ReservedMask) != 0)
        {
            return Outcome.Reject($"reserved flag bits set (flags 0x{h.Flags:x})");
        }

        string? syntax = PayloadRules.Validate(h.Request, message.Payload, message.FdCount);
        return syntax is not null ? Outcome.Reject(syntax) : Dispatch((FrontendRequest)h.Request, message);
    }

    private Outcome Dispatch(FrontendRequest request, VhostUserMessage message)
    {
        ReadOnlySpan<byte> p = message.Payload;
        Negotiation n = _negotiation;
        switch (request)
        {
            case FrontendRequest.GetFeatures:
                return Outcome.Reply(U64Payload.Encode(n.OfferedFeatures));
            case FrontendRequest.SetFeatures:
                return SetFeatures(U64Payload.Read(p));
            case FrontendRequest.GetProtocolFeatures:
                return Outcome.Reply(U64Payload.Encode(n.OfferedProtocol));
            case FrontendRequest.SetProtocolFeatures:
                return n.SetProtocolFeatures(U64Payload.Read(p));
            case FrontendRequest.SetOwner:
                return Outcome.Ok;
            case FrontendRequest.ResetOwner:
                return _ringRequests.ResetOwner();
            case FrontendRequest.SetMemTable:
                return _memory.SetTable(message);
            case FrontendRequest.SetVringNum:
                return _ringRequests.SetNum(VringStatePayload.Read(p));
            case FrontendRequest.SetVringAddr:
                return _ringRequests.SetAddress(VringAddressPayload.Read(p));
            case FrontendRequest.SetVringBase:
                return _ringRequests.SetBase(VringStatePayload.Read(p));
            case FrontendRequest.GetVringBase:
                return _ringRequests.GetBase(VringStatePayload.Read(p));
            case FrontendRequest.SetVringKick:
            case FrontendRequest.SetVringCall:
            case FrontendRequest.SetVringErr:
                return _ringRequests.SetFile(request, U64Payload.Read(p), message);
            case FrontendRequest.SetVringEnable:
                return SetVringEnable(VringStatePayload.Read(p));
            case FrontendRequest.GetQueueNum:
                return n.Gate(VhostUserProtocolFeatures.Mq) ?? Outcome.Reply(U64Payload.Encode(_offer.QueueNumReply ?? (ulong)_offer.Queues));
            case FrontendRequest.SetBackendReqFd:
                if (n.Gate(VhostUserProtocolFeatures.BackendReq) is { } refusedChannel)
                {
                    return refusedChannel;
                }

                _device.BackendRequests.Open(message.TakeFd(0), n.Acked(VhostUserProtocolFeatures.Config), _logger);
                return Outcome.Ok;
            case FrontendRequest.GetConfig:
                return n.Gate(VhostUserProtocolFeatures.Config) ?? _config.Get(DeviceConfigHeader.Read(p));
            case FrontendRequest.SetConfig:
                return n.Gate(VhostUserProtocolFeatures.Config) ?? _config.Set(DeviceConfigHeader.Read(p), p[DeviceConfigHeader.Length..]);
            case FrontendRequest.ResetDevice:
                return n.Gate(VhostUserProtocolFeatures.ResetDevice) ?? ResetDevice();
            case FrontendRequest.GetMaxMemSlots:
                return n.Gate(VhostUserProtocolFeatures.ConfigureMemSlots) ?? Outcome.Reply(U64Payload.Encode((ulong)_options.MaxMemorySlots));
            case FrontendRequest.AddMemReg:
                return n.Gate(VhostUserProtocolFeatures.ConfigureMemSlots) ?? _memory.AddRegion(message);
            case FrontendRequest.RemMemReg:
                return n.Gate(VhostUserProtocolFeatures.ConfigureMemSlots) ?? _memory.RemoveRegion(SingleRegionPayload.Read(p));
            case FrontendRequest.SetStatus:
                return n.Gate(VhostUserProtocolFeatures.Status) ?? SetStatus(U64Payload.Read(p));
            case FrontendRequest.GetStatus:
                return n.Gate(VhostUserProtocolFeatures.Status) ?? Outcome.Reply(U64Payload.Encode(n.Status));
            case FrontendRequest.NetSetMtu:
                return n.Gate(VhostUserProtocolFeatures.Mtu) ?? (RequestRules.Mtu(U64Payload.Read(p)) is { } badMtu ? Outcome.Reject(badMtu) : Outcome.Ok);
            case FrontendRequest.SetLogBase:
                return n.Gate(VhostUserProtocolFeatures.LogShmfd) ?? _memory.SetLogBase(message);
            case FrontendRequest.SetLogFd:
                // The optional "log changed" eventfd: QEMU never sends it and the SDK never signals it; accept and close.
                return n.Gate(VhostUserProtocolFeatures.LogShmfd) ?? Outcome.Ok;
            case FrontendRequest.SendRarp:
                return n.Gate(VhostUserProtocolFeatures.Rarp) ?? SendRarp(message.Payload);
            case FrontendRequest.GetInflightFd:
                return n.Gate(VhostUserProtocolFeatures.InflightShmfd) ?? _inflight.Get(InflightDescriptionPayload.Read(p));
            case FrontendRequest.SetInflightFd:
                return n.Gate(VhostUserProtocolFeatures.InflightShmfd) ?? _inflight.Set(InflightDescriptionPayload.Read(p), message);
            case FrontendRequest.SetDeviceStateFd:
                return n.Gate(VhostUserProtocolFeatures.DeviceState) ?? _state.Start(DeviceStateTransferPayload.Read(p), message, _rings.AnyStarted);
            case FrontendRequest.CheckDeviceState:
                return n.Gate(VhostUserProtocolFeatures.DeviceState) ?? _state.Check();
            case FrontendRequest.IotlbMsg:
                return (n.AckedFeatures & VirtioFeatureBits.AccessPlatform) == 0
                    ? Outcome.Reject("ACCESS_PLATFORM was not negotiated")
                    : Outcome.Reject("IOTLB is not supported");
            default:
                return UnsupportedRequests.Refusal(request, _negotiation);
        }
    }

    private Outcome SetFeatures(ulong features)
    {
        if (_negotiation.SetFeatures(features, _rings.AnyStarted, out bool loggingChanged) is { } refused)
        {
            return refused;
        }

        // LOG_ALL may arrive before any log: a device QEMU starts while a migration runs gets SET_FEATURES(LOG_ALL)
        // first and SET_LOG_BASE only after its rings (vhost_dev_start). Writes are marked once a log is installed.
        if (loggingChanged)
        {
            _rings.ApplyLogging();
        }

        if ((features & VirtioFeatureBits.ProtocolFeatures) == 0)
        {
            // Without VHOST_USER_F_PROTOCOL_FEATURES rings are enabled from the start (legacy behaviour).
            foreach (var r in _rings.Rings)
            {
                r.Enabled = true;
            }
        }

        _device.OnFeaturesAcked(_negotiation.GuestFeatures);
        return Outcome.Ok;
    }

    private Outcome SetVringEnable(VringStatePayload s)
    {
        Outcome outcome = _ringRequests.SetEnable(s);
        if (outcome.Kind == OutcomeKind.Ack)
        {
            _record.OnRingsChanged();
        }

        return outcome;
    }

    private Outcome SetStatus(ulong value)
    {
        if (_negotiation.SetStatus(value, out bool driverUp) is { } refused)
        {
            return refused;
        }

        _device.OnStatusChanged((DeviceStatus)_negotiation.Status);
        if (driverUp)
        {
            _record.Save("DRIVER_OK");
        }

        return Outcome.Ok;
    }

    private Outcome SendRarp(byte[] payload)
    {
        byte[] mac = payload[..6];
        if ((mac[0] & 1) != 0)
        {
            return Outcome.Reject("SEND_RARP with a multicast MAC");
        }

        bool sent = false;
        VhostUserDevice device = _device;
        var worker = _rings.Rings.FirstOrDefault(r => r.Worker is not null)?.Worker ?? _workers.Next();
        worker.Invoke(() => sent = device.OnSendRarp(mac));
        return sent ? Outcome.Ok : Outcome.Reject("the device could not send the RARP announcement");
    }

    private Outcome ResetDevice()
    {
        _rings.StopAll("RESET_DEVICE", reset: true);
        _rings.ReplaceInflight(null);
        _negotiation.Reset();
        _device.OnStatusChanged(DeviceStatus.Reset);
        return Outcome.Ok;
    }

    private void Teardown()
    {
        _rings.Teardown();
        _device.BackendRequests.Close();
        _device.OnDisconnected();
    }
}
