using Microsoft.Extensions.Logging;
using VhostCompat.Compat;
using VhostCompat.Interop;
using VhostCompat.Memory;
using VhostCompat.Protocol;
using VhostCompat.Queues;
using VhostCompat.Virtio;

namespace VhostCompat.Backend;

/// <summary>
/// The backend side of one vhost-user connection: validates every front-end request (syntax in
/// <see cref="PayloadRules"/>, state and limits here), applies it, and answers.
/// Outcome policy (pinned by the integration tests):
/// <list type="bullet">
/// <item>framing violations (size above 4 KiB, bad version bits, truncated or stalled message, lost fds) close the connection;</item>
/// <item>a refused request with NEED_REPLY gets a u64 ack of 1 (GET_CONFIG: an empty payload) and the connection stays up;</item>
/// <item>a refused request without NEED_REPLY closes the connection, since the frontend would otherwise believe it applied;</item>
/// <item>every fd attached to a message and not kept is closed.</item>
/// </list>
/// </summary>
internal sealed class BackendSession
{
    /// <summary>Protocol features the SDK can serve when the device asks for them.</summary>
    internal const VhostUserProtocolFeatures DeviceSelectable =
        VhostUserProtocolFeatures.Config | VhostUserProtocolFeatures.BackendReq | VhostUserProtocolFeatures.Mtu | VhostUserProtocolFeatures.Rarp
        | VhostUserProtocolFeatures.InflightShmfd;

    private readonly VhostUserDevice _device;
    private readonly VhostUserBackendOptions _options;
    private readonly ILogger _logger;
    private readonly Vring[] _rings;
    private readonly ulong _offeredFeatures;
    private readonly ulong _offeredProtocol;
    private ulong _ackedFeatures;
    private bool _featuresSet;
    private ulong _ackedProtocol;
    private bool _protocolNegotiated;
    private bool _ringSizeRefusalLogged;
    private byte _status;
    private GuestMemoryTable _memory = GuestMemoryTable.Empty;
    private FileDescriptor? _backendChannel;
    private readonly VhostUserWorkerPool _workers;
    private DirtyLog? _log;
    private InflightArea? _inflight;

    private readonly ProfilePin? _pin;
    private readonly Action<AckedStateRecord>? _saveRecord;
    private readonly string? _recordKey;
    private readonly ushort _maxQueueSize;

    public BackendSession(VhostUserDevice device, VhostUserBackendOptions options, VhostUserWorkerPool workers, ILogger logger,
        ProfilePin? pin = null, Action<AckedStateRecord>? saveRecord = null, string? recordKey = null)
    {
        _device = device;
        _workers = workers;
        _options = options;
        _logger = logger;
        _pin = pin;
        _saveRecord = saveRecord;
        _recordKey = recordKey;
        _maxQueueSize = pin?.MaxRingSize ?? device.MaxQueueSize;
        int queues = pin?.QueueCount ?? device.QueueCount;
        if (queues is < 1 or > 255)
        {
            throw new ArgumentException($"device QueueCount {queues} outside 1..255");
        }

        _rings = new Vring[queues];
        for (int i = 0; i < queues; i++)
        {
            _rings[i] = new Vring(i);
        }

        _offeredFeatures = pin?.OfferedFeatures(OfferedFeatures(device)) ?? OfferedFeatures(device);
        _offeredProtocol = (ulong)OfferedProtocolFeatures(device, options, pin);
    }

    internal static ulong OfferedFeatures(VhostUserDevice device) =>
        (device.DeviceFeatures & ~(VirtioFeatureBits.LogAll | VirtioFeatureBits.ProtocolFeatures)) | VirtioFeatureBits.ProtocolFeatures | VirtioFeatureBits.LogAll;

    /// <summary>GET_PROTOCOL_FEATURES: what the SDK implements, the device's own bits, and the pin's restrictions.</summary>
    internal static VhostUserProtocolFeatures OfferedProtocolFeatures(VhostUserDevice device, VhostUserBackendOptions options, ProfilePin? pin = null)
    {
        var p = VhostUserProtocolFeatures.Mq | VhostUserProtocolFeatures.ReplyAck | VhostUserProtocolFeatures.Status | VhostUserProtocolFeatures.LogShmfd
            | VhostUserProtocolFeatures.ResetDevice | (device.ProtocolFeatures & DeviceSelectable);
        if (options.OfferMemorySlots)
        {
            p |= VhostUserProtocolFeatures.ConfigureMemSlots;
        }

        if (device.StateVersion != 0)
        {
            p |= VhostUserProtocolFeatures.DeviceState;
        }

        return pin?.OfferedProtocolFeatures(p) ?? p;
    }

    public ulong AckedFeatures => _ackedFeatures;

    public ulong AckedProtocolFeatures => _ackedProtocol;

    public DeviceStatus Status => (DeviceStatus)_status;

    internal GuestMemoryTable Memory => _memory;

    internal IReadOnlyList<Vring> Rings => _rings;

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
        var request = (FrontendRequest)h.Request;
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
                if (outcome.SizeProbe)
                {
                    if (_ringSizeRefusalLogged)
                    {
                        Log.RingSizeRefusedAgain(_logger, name, outcome.Reason);
                    }
                    else
                    {
                        _ringSizeRefusalLogged = true;
                        Log.RingSizeRefused(_logger, name, outcome.Reason);
                    }
                }
                else
                {
                    Log.Refused(_logger, name, outcome.Reason);
                }

                Metrics.RefusedRequests.Add(1, new KeyValuePair<string, object?>("vhostcompat.request", name));
                if (request == FrontendRequest.SetLogBase && (_ackedProtocol & (ulong)VhostUserProtocolFeatures.LogShmfd) != 0)
                {
                    // The frontend waits for SET_LOG_BASE's own reply: answer the refusal rather than hang it.
                    connection.Send(h.Request, MessageHeader.ReplyFlags, U64Payload.Encode(1));
                    return null;
                }

                if (request == FrontendRequest.GetInflightFd)
                {
                    // A zero-sized description means "no inflight buffer": QEMU then runs without one.
                    connection.Send(h.Request, MessageHeader.ReplyFlags, new InflightDescriptionPayload(0, 0, 0, 0).Encode());
                    return null;
                }

                if (request == FrontendRequest.GetConfig)
                {
                    // A failed GET_CONFIG is answered with an empty payload (QEMU checks the size).
                    connection.Send(h.Request, MessageHeader.ReplyFlags, ReadOnlySpan<byte>.Empty);
                    return null;
                }

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

    internal enum OutcomeKind
    {
        Ack,
        Reply,
        Reject,

        /// <summary>Refused, and the connection is closed whatever the flags: a reply would be taken for success.</summary>
        Close,
    }

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
        if (syntax is not null)
        {
            return Outcome.Reject(syntax);
        }

        ReadOnlySpan<byte> p = message.Payload;
        switch ((FrontendRequest)h.Request)
        {
            case FrontendRequest.GetFeatures:
                return Outcome.Reply(U64Payload.Encode(_offeredFeatures));
            case FrontendRequest.SetFeatures:
                return SetFeatures(U64Payload.Read(p));
            case FrontendRequest.GetProtocolFeatures:
                return Outcome.Reply(U64Payload.Encode(_offeredProtocol));
            case FrontendRequest.SetProtocolFeatures:
                return SetProtocolFeatures(U64Payload.Read(p));
            case FrontendRequest.SetOwner:
                return Outcome.Ok;
            case FrontendRequest.ResetOwner:
                // Deprecated: stop and disable the rings, keep the session (PROTOCOL.md §3.1).
                foreach (var r in _rings)
                {
                    StopRing(r, "reset owner");
                    r.Enabled = false;
                }

                return Outcome.Ok;
            case FrontendRequest.SetMemTable:
                return SetMemTable(message);
            case FrontendRequest.SetVringNum:
                return SetVringNum(VringStatePayload.Read(p));
            case FrontendRequest.SetVringAddr:
                return SetVringAddr(VringAddressPayload.Read(p));
            case FrontendRequest.SetVringBase:
                return SetVringBase(VringStatePayload.Read(p));
            case FrontendRequest.GetVringBase:
                return GetVringBase(VringStatePayload.Read(p));
            case FrontendRequest.SetVringKick:
            case FrontendRequest.SetVringCall:
            case FrontendRequest.SetVringErr:
                return SetVringFile((FrontendRequest)h.Request, U64Payload.Read(p), message);
            case FrontendRequest.SetVringEnable:
                return SetVringEnable(VringStatePayload.Read(p));
            case FrontendRequest.GetQueueNum:
                return Gate(VhostUserProtocolFeatures.Mq) ?? Outcome.Reply(U64Payload.Encode(_pin?.QueueNumReply ?? _device.QueueNumReply));
            case FrontendRequest.SetBackendReqFd:
                if (Gate(VhostUserProtocolFeatures.BackendReq) is { } refusedChannel)
                {
                    return refusedChannel;
                }

                _backendChannel?.Dispose();
                _backendChannel = message.TakeFd(0);
                return Outcome.Ok;
            case FrontendRequest.GetConfig:
                return GetConfig(DeviceConfigHeader.Read(p));
            case FrontendRequest.SetConfig:
                return SetConfig(DeviceConfigHeader.Read(p), p[DeviceConfigHeader.Length..]);
            case FrontendRequest.ResetDevice:
                return Gate(VhostUserProtocolFeatures.ResetDevice) ?? ResetDevice();
            case FrontendRequest.GetMaxMemSlots:
                return Gate(VhostUserProtocolFeatures.ConfigureMemSlots) ?? Outcome.Reply(U64Payload.Encode((ulong)_options.MaxMemorySlots));
            case FrontendRequest.AddMemReg:
                return Gate(VhostUserProtocolFeatures.ConfigureMemSlots) ?? AddMemReg(message);
            case FrontendRequest.RemMemReg:
                return Gate(VhostUserProtocolFeatures.ConfigureMemSlots) ?? RemMemReg(SingleRegionPayload.Read(p));
            case FrontendRequest.SetStatus:
                return Gate(VhostUserProtocolFeatures.Status) ?? SetStatus(U64Payload.Read(p));
            case FrontendRequest.GetStatus:
                return Gate(VhostUserProtocolFeatures.Status) ?? Outcome.Reply(U64Payload.Encode(_status));
            case FrontendRequest.NetSetMtu:
            {
                if (Gate(VhostUserProtocolFeatures.Mtu) is { } refusedMtu)
                {
                    return refusedMtu;
                }

                ulong mtu = U64Payload.Read(p);
                return mtu is < 68 or > 65535 ? Outcome.Reject($"MTU {mtu} outside 68..65535") : Outcome.Ok;
            }

            case FrontendRequest.SetLogBase:
                return Gate(VhostUserProtocolFeatures.LogShmfd) ?? SetLogBase(message);
            case FrontendRequest.SetLogFd:
                // The optional "log changed" eventfd: QEMU never sends it and the SDK never signals it; accept and close.
                return Gate(VhostUserProtocolFeatures.LogShmfd) ?? Outcome.Ok;
            case FrontendRequest.SetVringEndian:
                return Gate(VhostUserProtocolFeatures.CrossEndian) ?? Outcome.Reject("cross-endian rings are not supported");
            case FrontendRequest.SendRarp:
                return Gate(VhostUserProtocolFeatures.Rarp) ?? SendRarp(message.Payload);
            case FrontendRequest.GetInflightFd:
                return Gate(VhostUserProtocolFeatures.InflightShmfd) ?? GetInflightFd(InflightDescriptionPayload.Read(p));
            case FrontendRequest.SetInflightFd:
                return Gate(VhostUserProtocolFeatures.InflightShmfd) ?? SetInflightFd(InflightDescriptionPayload.Read(p), message);
            case FrontendRequest.PostcopyAdvise:
            case FrontendRequest.PostcopyListen:
            case FrontendRequest.PostcopyEnd:
                return Gate(VhostUserProtocolFeatures.Pagefault) ?? Outcome.Reject("postcopy is not supported");
            case FrontendRequest.IotlbMsg:
                return (_ackedFeatures & VirtioFeatureBits.AccessPlatform) == 0
                    ? Outcome.Reject("ACCESS_PLATFORM was not negotiated")
                    : Outcome.Reject("IOTLB is not supported");
            case FrontendRequest.VringKick:
                return Gate(VhostUserProtocolFeatures.InbandNotifications) ?? Outcome.Reject("in-band notifications are not supported");
            case FrontendRequest.SetDeviceStateFd:
                return Gate(VhostUserProtocolFeatures.DeviceState) ?? SetDeviceStateFd(DeviceStateTransferPayload.Read(p), message);
            case FrontendRequest.CheckDeviceState:
                return Gate(VhostUserProtocolFeatures.DeviceState) ?? CheckDeviceState();
            case FrontendRequest.GetSharedObject:
                return Gate(VhostUserProtocolFeatures.SharedObject) ?? Outcome.Reject("shared objects are not supported");
            case FrontendRequest.GetShmemConfig:
                return Gate(VhostUserProtocolFeatures.Shmem) ?? Outcome.Reject("VIRTIO Shared Memory Regions are not supported");
            case FrontendRequest.GetVringBaseSkipDrain:
                return Gate(VhostUserProtocolFeatures.GetVringBaseSkipDrain) ?? Outcome.Reject("stopping a ring without draining is not supported");
            case FrontendRequest.CreateCryptoSession:
            case FrontendRequest.CloseCryptoSession:
                return Gate(VhostUserProtocolFeatures.CryptoSession) ?? Outcome.Reject("crypto sessions are not supported");
            case FrontendRequest.GpuSetSocket:
                return Outcome.Reject("GPU_SET_SOCKET is only valid for vhost-user-gpu devices");
            default:
                return Outcome.Reject("unknown request code");
        }
    }

    private Outcome? Gate(VhostUserProtocolFeatures feature) =>
        (_ackedProtocol & (ulong)feature) != 0 ? null : Outcome.Reject($"protocol feature {feature} was not negotiated");

    private bool PackedRing => (_ackedFeatures & VirtioFeatureBits.RingPacked) != 0;

    private bool TryGetRing(uint index, out Vring ring, out Outcome refused)
    {
        if (index >= (uint)_rings.Length)
        {
            ring = null!;
            refused = Outcome.Reject($"ring index {index} outside 0..{_rings.Length - 1}");
            return false;
        }

        ring = _rings[index];
        refused = default;
        return true;
    }

    private Outcome SetFeatures(ulong features)
    {
        ulong notOffered = features & ~_offeredFeatures;
        if (notOffered != 0)
        {
            return Outcome.Reject($"acked bits 0x{notOffered:x} were never offered (offer 0x{_offeredFeatures:x})");
        }

        if (_featuresSet && ((features ^ _ackedFeatures) & ~VirtioFeatureBits.LogAll) != 0 && _rings.Any(r => r.Started))
        {
            return Outcome.Reject($"features 0x{features:x} differ from 0x{_ackedFeatures:x} while queues are running");
        }

        bool loggingChanged = ((_ackedFeatures ^ features) & VirtioFeatureBits.LogAll) != 0;
        // LOG_ALL may arrive before any log: a device QEMU starts while a migration runs gets SET_FEATURES(LOG_ALL)
        // first and SET_LOG_BASE only after its rings (vhost_dev_start). Writes are marked once a log is installed.
        _ackedFeatures = features;
        _featuresSet = true;
        if (loggingChanged)
        {
            ApplyLogging();
        }

        if ((features & VirtioFeatureBits.ProtocolFeatures) == 0)
        {
            // Without VHOST_USER_F_PROTOCOL_FEATURES rings are enabled from the start (legacy behaviour).
            foreach (var r in _rings)
            {
                r.Enabled = true;
            }
        }

        Log.FeaturesAcked(_logger, features, _offeredFeatures);
        Metrics.Negotiations.Add(1);
        _device.OnFeaturesAcked(features & ~(VirtioFeatureBits.ProtocolFeatures | VirtioFeatureBits.LogAll));
        return Outcome.Ok;
    }

    private Outcome SetProtocolFeatures(ulong features)
    {
        ulong notOffered = features & ~_offeredProtocol;
        if (notOffered != 0)
        {
            return Outcome.Reject($"acked protocol bits 0x{notOffered:x} were never offered (offer 0x{_offeredProtocol:x})");
        }

        _ackedProtocol = features;
        _protocolNegotiated = true;
        Log.ProtocolFeaturesAcked(_logger, features, _offeredProtocol);
        return Outcome.Ok;
    }

    private bool Logging => (_ackedFeatures & VirtioFeatureBits.LogAll) != 0;

    private Outcome SetLogBase(VhostUserMessage message)
    {
        var d = LogDescriptionPayload.Read(message.Payload);
        using FileDescriptor fd = message.TakeFd(0);
        DirtyLog? log = DirtyLog.TryMap(d, fd, _memory, _options.RequireSealedMemory, out string error);
        if (log is null)
        {
            // QEMU ignores the reply's value and releases its previous log right after it: if one is installed (or
            // logging is on), marks would keep going where nobody reads. Close, so that the migration fails loudly.
            return Logging || _log is not null
                ? Outcome.Close($"replacement dirty log refused while {(Logging ? "logging is on" : "a log is installed")}: {error}")
                : Outcome.Reject(error);
        }

        // Every queue switches to the new log on its worker (Invoke waits); then the old log is retired, which waits
        // for marks still being written into it from other threads. Only then is the reply sent: once QEMU has it, it
        // reads the old log one last time and frees it, so nothing may be marked there afterwards.
        DirtyLog? old = _log;
        _log = log;
        ApplyLogging();
        if (old is not null)
        {
            old.Retire();
            if (old.Overflow is { } carried)
            {
                Log.DirtyLogOverflowCarried(_logger, carried.First << DirtyLog.PageShift, (carried.Last + 1) << DirtyLog.PageShift);
            }

            old.CarryOverflowTo(log);
            old.Release();
        }

        // With LOG_SHMFD the frontend waits for a reply to SET_LOG_BASE (QEMU checks only its request code).
        return Outcome.Reply(U64Payload.Encode(0));
    }

    /// <summary>Hands the current log (or none) to every running queue, on its worker.</summary>
    private void ApplyLogging()
    {
        DirtyLog? log = Logging ? _log : null;
        foreach (var ring in _rings)
        {
            if (ring.Queue is { } queue && ring.Worker is { } worker)
            {
                bool usedLog = (ring.AddressFlags & VringAddressPayload.FlagLog) != 0;
                ulong usedAddress = ring.LogGuestAddress;
                worker.Invoke(() =>
                {
                    queue.SetLog(log);
                    queue.SetUsedRingLogging(usedLog, usedAddress);
                });
            }
        }
    }

    private Outcome SetMemTable(VhostUserMessage message)
    {
        ReadOnlySpan<byte> p = message.Payload;
        int count = (int)MemoryTablePayload.ReadCount(p);
        var descriptions = new MemoryRegionPayload[count];
        for (int i = 0; i < count; i++)
        {
            descriptions[i] = MemoryTablePayload.ReadRegion(p, i);
            if (GuestMemoryRegion.ValidateDescription(descriptions[i]) is { } bad)
            {
                return Outcome.Reject($"region {i}: {bad}");
            }
        }

        if (GuestMemoryTable.FindOverlap(descriptions) is { } overlap)
        {
            return Outcome.Reject(overlap);
        }

        var mapped = new GuestMemoryRegion[count];
        for (int i = 0; i < count; i++)
        {
            using FileDescriptor fd = message.TakeFd(i);
            GuestMemoryRegion? region = GuestMemoryRegion.TryMap(descriptions[i], fd, _options.RequireSealedMemory, out string error);
            if (region is null)
            {
                // All or nothing: the previous table stays in force.
                for (int j = 0; j < i; j++)
                {
                    mapped[j].Release();
                }

                return Outcome.Reject($"region {i}: {error}");
            }

            mapped[i] = region;
            ReportSealing(region);
        }

        InstallMemory(new GuestMemoryTable(mapped));
        return Outcome.Ok;
    }

    private void ReportSealing(GuestMemoryRegion region)
    {
        if (region.Sealing == Interop.FileSealing.Unsealable)
        {
            Log.UnsealableRegion(_logger, region.GuestPhysicalAddress, region.Size);
        }
        else
        {
            Log.RegionSealing(_logger, region.GuestPhysicalAddress, region.Size, region.Sealing.ToString());
        }
    }

    private Outcome AddMemReg(VhostUserMessage message)
    {
        MemoryRegionPayload d = SingleRegionPayload.Read(message.Payload);
        if (GuestMemoryRegion.ValidateDescription(d) is { } bad)
        {
            return Outcome.Reject(bad);
        }

        if (_memory.Regions.Any(r => r.Matches(d)))
        {
            // QEMU 7.2 sends the same ADD_MEM_REG once per queue pair: an identical region is already in place.
            return Outcome.Ok;
        }

        if (_memory.Count >= _options.MaxMemorySlots)
        {
            return Outcome.Reject($"all {_options.MaxMemorySlots} memory slots are in use");
        }

        var all = _memory.Regions.Select(r => r.Description).Append(d).ToArray();
        if (GuestMemoryTable.FindOverlap(all) is { } overlap)
        {
            return Outcome.Reject($"new region overlaps an existing one ({overlap})");
        }

        using FileDescriptor fd = message.TakeFd(0);
        GuestMemoryRegion? region = GuestMemoryRegion.TryMap(d, fd, _options.RequireSealedMemory, out string error);
        if (region is null)
        {
            return Outcome.Reject(error);
        }

        ReportSealing(region);
        foreach (var r in _memory.Regions)
        {
            r.AddRef();
        }

        InstallMemory(new GuestMemoryTable([.. _memory.Regions, region]));
        return Outcome.Ok;
    }

    private Outcome RemMemReg(MemoryRegionPayload d)
    {
        GuestMemoryRegion? match = _memory.Regions.FirstOrDefault(r => r.Matches(d));
        if (match is null)
        {
            // Duplicate removals (QEMU 7.2 multi-queue) are harmless.
            return Outcome.Ok;
        }

        var keep = _memory.Regions.Where(r => !ReferenceEquals(r, match)).ToArray();
        foreach (var r in keep)
        {
            r.AddRef();
        }

        InstallMemory(new GuestMemoryTable(keep));
        return Outcome.Ok;
    }

    private void InstallMemory(GuestMemoryTable table)
    {
        GuestMemoryTable old = _memory;
        _memory = table;
        ulong bytes = 0;
        foreach (var r in table.Regions)
        {
            bytes += r.Size;
        }

        Log.MemoryTable(_logger, table.Count, bytes);

        // Running rings move to the new table on their worker (the old mapping stays until they have);
        // rings whose memory disappeared stop; rings that were waiting for memory may start now.
        foreach (var ring in _rings)
        {
            if (ring.Started && RingTranslationError(ring) is { } error)
            {
                Log.QueueCannotStart(_logger, ring.Index, error);
                StopRing(ring, "memory removed");
            }
            else if (ring.Started && ring.Queue is { } queue && table.TryAcquire())
            {
                string? moved = null;
                ring.Worker!.Invoke(() => moved = queue.ReplaceMemory(table));
                if (moved is null)
                {
                    ring.Lease?.Release();
                    ring.Lease = table;
                }
                else
                {
                    table.Release();
                    Log.QueueCannotStart(_logger, ring.Index, moved);
                    StopRing(ring, "memory replaced");
                }
            }
            else if (!ring.Started)
            {
                TryStartRing(ring, quiet: true);
            }
        }

        old.Release();
    }

    private Outcome SetVringNum(VringStatePayload s)
    {
        if (!TryGetRing(s.Index, out Vring ring, out Outcome refused))
        {
            return refused;
        }

        if (ring.Started)
        {
            return Outcome.Reject($"ring {s.Index} is running");
        }

        if (s.Num > _maxQueueSize)
        {
            return Outcome.RejectSizeProbe($"ring size {s.Num} outside 1..{_maxQueueSize}");
        }

        if (s.Num == 0)
        {
            return Outcome.Reject($"ring size {s.Num} outside 1..{_maxQueueSize}");
        }

        if (!PackedRing && (s.Num & (s.Num - 1)) != 0)
        {
            return Outcome.Reject($"split ring size {s.Num} is not a power of two");
        }

        ring.Size = (int)s.Num;
        return Outcome.Ok;
    }

    private Outcome SetVringAddr(VringAddressPayload a)
    {
        if (!TryGetRing(a.Index, out Vring ring, out Outcome refused))
        {
            return refused;
        }

        if ((a.Flags & ~VringAddressPayload.FlagLog) != 0)
        {
            return Outcome.Reject($"unknown vring address flags 0x{a.Flags:x}");
        }

        if (!PackedRing && (a.Descriptor % 16 != 0 || a.Available % 2 != 0 || a.Used % 4 != 0))
        {
            return Outcome.Reject("ring addresses are misaligned (descriptors 16, avail 2, used 4 bytes)");
        }

        if (ring.Started && (a.Descriptor != ring.Descriptor || a.Available != ring.Available || a.Used != ring.Used))
        {
            return Outcome.Reject($"ring {a.Index} is running: only logging may change");
        }

        ring.Descriptor = a.Descriptor;
        ring.Available = a.Available;
        ring.Used = a.Used;
        ring.AddressFlags = a.Flags;
        ring.LogGuestAddress = a.LogGuestAddress;
        ring.AddressesSet = true;
        if (ring.Started)
        {
            ApplyLogging();
        }

        return Outcome.Ok;
    }

    private Outcome SetVringBase(VringStatePayload s)
    {
        if (!TryGetRing(s.Index, out Vring ring, out Outcome refused))
        {
            return refused;
        }

        if (ring.Started)
        {
            return Outcome.Reject($"ring {s.Index} is running");
        }

        if (!PackedRing && s.Num > 0xFFFF)
        {
            return Outcome.Reject($"split ring base {s.Num} does not fit 16 bits");
        }

        ring.Base = s.Num;
        return Outcome.Ok;
    }

    private Outcome GetVringBase(VringStatePayload s)
    {
        if (!TryGetRing(s.Index, out Vring ring, out Outcome refused))
        {
            return refused;
        }

        // Stopping an unconfigured or already stopped ring is harmless (DPDK virtio-user reconnect does it).
        StopRing(ring, "GET_VRING_BASE");
        ring.ReplaceKick(null);
        ring.KickSet = false;
        return Outcome.Reply(new VringStatePayload(s.Index, ring.Base).Encode());
    }

    private Outcome SetVringFile(FrontendRequest request, ulong word, VhostUserMessage message)
    {
        ulong index = word & VringFileWord.IndexMask;
        if (!TryGetRing((uint)index, out Vring ring, out Outcome refused))
        {
            return refused;
        }

        bool noFd = (word & VringFileWord.NoFdFlag) != 0;
        FileDescriptor? fd = noFd ? null : message.TakeFd(0);
        switch (request)
        {
            case FrontendRequest.SetVringKick:
                // A new kick on a running ring: restart it on the new notifier.
                StopRing(ring, "kick replaced");
                ring.ReplaceKick(fd);
                ring.KickSet = true;
                ring.KickPolled = noFd;
                TryStartRing(ring, quiet: false);
                break;
            case FrontendRequest.SetVringCall:
                ring.Queue?.SetCall(fd); // the worker holds a reference while signalling, so the old fd can close now
                ring.ReplaceCall(fd);
                ring.CallDisabled = noFd;
                break;
            default:
                ring.Queue?.SetErr(fd);
                ring.ReplaceErr(fd);
                break;
        }

        return Outcome.Ok;
    }

    private Outcome SetVringEnable(VringStatePayload s)
    {
        if (!TryGetRing(s.Index, out Vring ring, out Outcome refused))
        {
            return refused;
        }

        if (s.Num > 1)
        {
            return Outcome.Reject($"enable value {s.Num} is neither 0 nor 1");
        }

        bool protocolFeatures = _featuresSet ? (_ackedFeatures & VirtioFeatureBits.ProtocolFeatures) != 0 : _protocolNegotiated;
        if (!protocolFeatures)
        {
            return Outcome.Reject("VHOST_USER_F_PROTOCOL_FEATURES was not negotiated");
        }

        bool wasEnabled = ring.Enabled;
        ring.Enabled = s.Num == 1;
        ring.Queue?.SetEnabled(ring.Enabled);
        if (ring.Enabled != wasEnabled && ring.Worker is { } worker && ring.Binding is { } binding)
        {
            // The worker reports the change (OnQueueEnabledChanged) and, enabled, lets the device look at buffers the driver queued meanwhile.
            worker.Poke(binding);
        }
        if (ring.Started)
        {
            Log.QueueState(_logger, ring.Index, ring.Enabled ? "enabled" : "disabled", ring.Size, ring.Enabled, ring.Base);
            _device.OnQueueStateChanged(ring.Info);
        }

        return Outcome.Ok;
    }

    private Outcome GetConfig(DeviceConfigHeader c)
    {
        if (Gate(VhostUserProtocolFeatures.Config) is { } refused)
        {
            return refused;
        }

        if (ConfigRangeError(c) is { } error)
        {
            return Outcome.Reject(error);
        }

        var data = new byte[c.Size];
        _device.ReadConfig((int)c.Offset, data);
        _pin?.PatchConfig((int)c.Offset, data);
        return Outcome.Reply(c.Encode(data));
    }

    private Outcome SetConfig(DeviceConfigHeader c, ReadOnlySpan<byte> data)
    {
        if (Gate(VhostUserProtocolFeatures.Config) is { } refused)
        {
            return refused;
        }

        if (ConfigRangeError(c) is { } error)
        {
            return Outcome.Reject(error);
        }

        return _device.WriteConfig((int)c.Offset, data, c.Flags == DeviceConfigHeader.FlagMigration)
            ? Outcome.Ok
            : Outcome.Reject($"the device refused a config write at offset {c.Offset}, size {c.Size}");
    }

    private string? ConfigRangeError(DeviceConfigHeader c)
    {
        if (c.Flags > DeviceConfigHeader.FlagMigration)
        {
            return $"unknown config flags 0x{c.Flags:x}";
        }

        if ((ulong)c.Offset + c.Size > (ulong)_device.ConfigSize)
        {
            return $"config range {c.Offset}+{c.Size} exceeds the {_device.ConfigSize}-byte config space";
        }

        return null;
    }

    private Outcome SetStatus(ulong value)
    {
        if (value > 0xFF)
        {
            return Outcome.Reject($"status 0x{value:x} does not fit a byte");
        }

        // SET_STATUS(0) is not treated as a reset: QEMU 7.2 sends it before GET_VRING_BASE,
        // and ring positions must survive until then (PROTOCOL.md §12.7).
        bool driverUp = (value & (ulong)DeviceStatus.DriverOk) != 0 && (_status & (byte)DeviceStatus.DriverOk) == 0;
        _status = (byte)value;
        Log.Status(_logger, _status);
        _device.OnStatusChanged((DeviceStatus)_status);
        if (driverUp)
        {
            SaveRecord();
        }

        return Outcome.Ok;
    }

    /// <summary>Persists what the frontend acked once the driver is up (DRIVER_OK, or the first ring start without STATUS).</summary>
    private void SaveRecord()
    {
        if (_saveRecord is null || !_featuresSet)
        {
            return;
        }

        var sizes = _rings.Where(r => r.Size > 0).ToDictionary(r => r.Index, r => r.Size);
        var config = new byte[_device.ConfigSize];
        _device.ReadConfig(0, config);
        _pin?.PatchConfig(0, config);
        ulong guestFeatures = _ackedFeatures & ~(VirtioFeatureBits.ProtocolFeatures | VirtioFeatureBits.LogAll);
        _saveRecord(new AckedStateRecord(_recordKey!, _device.DeviceType, guestFeatures, _ackedProtocol, _pin?.Profile, _rings.Length, sizes, config, profilePinned: _pin?.IsExplicit ?? false)
        {
            DeviceStateVersion = (_ackedProtocol & (ulong)VhostUserProtocolFeatures.DeviceState) != 0 ? _device.StateVersion : null,
        });
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
        var worker = _rings.FirstOrDefault(r => r.Worker is not null)?.Worker ?? _workers.Next();
        worker.Invoke(() => sent = device.OnSendRarp(mac));
        return sent ? Outcome.Ok : Outcome.Reject("the device could not send the RARP announcement");
    }

    private Task<string?>? _stateTransfer;

    /// <summary>
    /// SET_DEVICE_STATE_FD: save (direction 0) writes the device's wrapped state into the fd and closes
    /// it; load (1) reads the fd to EOF and hands the validated payload to the device. The transfer runs
    /// in the background (the frontend drains or fills the pipe meanwhile); CHECK_DEVICE_STATE reports it.
    /// </summary>
    private Outcome SetDeviceStateFd(DeviceStateTransferPayload t, VhostUserMessage message)
    {
        if (t.Direction > 1 || t.Phase != 0)
        {
            return Outcome.Reply(U64Payload.Encode(0x100 | 1)); // error, no fd returned
        }

        if (_rings.Any(r => r.Started))
        {
            return Outcome.Reply(U64Payload.Encode(0x100 | 1)); // state is only consistent while stopped
        }

        FileDescriptor fd = message.TakeFd(0);
        var handle = new Microsoft.Win32.SafeHandles.SafeFileHandle(fd.Detach(), ownsHandle: true);
        VhostUserDevice device = _device;
        ILogger logger = _logger;
        uint type = (uint)device.DeviceType;
        long started = System.Diagnostics.Stopwatch.GetTimestamp();
        _stateTransfer = t.Direction == 0
            ? Task.Run(new Func<string?>(() =>
            {
                using var stream = new FileStream(handle, FileAccess.Write, 1);
                byte[] blob = DeviceStateBlob.Wrap(type, device.StateVersion, device.SaveState());
                stream.Write(blob);
                Log.DeviceStateTransferred(logger, "saved", blob.Length, device.StateVersion, System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalMilliseconds);
                return null;
            }))
            : Task.Run(new Func<string?>(() =>
            {
                using var stream = new FileStream(handle, FileAccess.Read, 1);
                using var buffer = new MemoryStream();
                var chunk = new byte[65536];
                int n;
                while ((n = stream.Read(chunk)) > 0)
                {
                    if (buffer.Length + n > DeviceStateBlob.MaxPayload + DeviceStateBlob.HeaderLength + DeviceStateBlob.DigestLength)
                    {
                        return "device state exceeds the size limit";
                    }

                    buffer.Write(chunk, 0, n);
                }

                string? error = DeviceStateBlob.TryUnwrap(buffer.GetBuffer().AsSpan(0, (int)buffer.Length), type, out uint version, out ReadOnlySpan<byte> payload);
                if (error is not null)
                {
                    return error;
                }

                if (!device.LoadState(version, payload))
                {
                    return $"the device refused state version {version} (it writes version {device.StateVersion})";
                }

                Log.DeviceStateTransferred(logger, "loaded", (int)buffer.Length, version, System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalMilliseconds);
                return null;
            }));
        return Outcome.Reply(U64Payload.Encode(0x100)); // success, no fd of our own: the frontend's pipe is used
    }

    private Outcome CheckDeviceState()
    {
        Task<string?>? transfer = _stateTransfer;
        _stateTransfer = null;
        string? error;
        if (transfer is null)
        {
            error = "no device state transfer was started";
        }
        else if (!transfer.Wait(TimeSpan.FromSeconds(10)))
        {
            error = "the device state transfer did not finish within 10 s";
        }
        else
        {
            error = transfer.IsFaulted ? transfer.Exception!.InnerException!.Message : transfer.Result;
        }

        if (error is not null)
        {
            Log.Refused(_logger, "CHECK_DEVICE_STATE", error);
            return Outcome.Reply(U64Payload.Encode(1));
        }

        return Outcome.Reply(U64Payload.Encode(0));
    }

    private Outcome GetInflightFd(InflightDescriptionPayload d)
    {
        InflightArea? area = InflightArea.Create(d.NumQueues, d.QueueSize, PackedRing, _rings.Length, _maxQueueSize, out FileDescriptor? fd, out string error);
        if (area is null)
        {
            return Outcome.Reject(error);
        }

        ReplaceInflight(area);
        return Outcome.Reply(new InflightDescriptionPayload(area.Size, 0, area.QueueCount, area.QueueSize).Encode(), fd!);
    }

    private Outcome SetInflightFd(InflightDescriptionPayload d, VhostUserMessage message)
    {
        using FileDescriptor fd = message.TakeFd(0);
        InflightArea? area = InflightArea.TryMap(d, fd, PackedRing, _rings.Length, _maxQueueSize, _options.RequireSealedMemory, out string error);
        if (area is null)
        {
            return Outcome.Reject(error);
        }

        ReplaceInflight(area);
        return Outcome.Ok;
    }

    /// <summary>Installs the buffer queues attach when they start; running queues keep their own reference to the old one.</summary>
    private void ReplaceInflight(InflightArea? area)
    {
        InflightArea? old = _inflight;
        _inflight = area;
        old?.Release();
        if (area is not null)
        {
            Log.InflightBuffer(_logger, area.QueueCount, area.QueueSize, area.Packed ? "packed" : "split", area.Size);
        }
    }

    private Outcome ResetDevice()
    {
        foreach (var r in _rings)
        {
            StopRing(r, "RESET_DEVICE");
            r.Reset();
        }

        ReplaceInflight(null);
        _ackedFeatures = 0;
        _featuresSet = false;
        _status = 0;
        _device.OnStatusChanged(DeviceStatus.Reset);
        return Outcome.Ok;
    }

    private string? RingTranslationError(Vring ring)
    {
        ulong n = (ulong)ring.Size;
        ulong descBytes = 16 * n;
        ulong availBytes = PackedRing ? 4 : 6 + (2 * n);
        ulong usedBytes = PackedRing ? 4 : 6 + (8 * n);
        if (!_memory.TryTranslateFrontendVirtual(ring.Descriptor, descBytes, out _))
        {
            return $"descriptor table 0x{ring.Descriptor:x}+{descBytes} is not inside guest memory";
        }

        if (!_memory.TryTranslateFrontendVirtual(ring.Available, availBytes, out _))
        {
            return $"driver area 0x{ring.Available:x}+{availBytes} is not inside guest memory";
        }

        if (!_memory.TryTranslateFrontendVirtual(ring.Used, usedBytes, out _))
        {
            return $"device area 0x{ring.Used:x}+{usedBytes} is not inside guest memory";
        }

        return null;
    }

    private void TryStartRing(Vring ring, bool quiet)
    {
        if (ring.Started || !ring.KickSet)
        {
            return;
        }

        string? missing = ring.Size == 0 ? "no ring size" : !ring.AddressesSet ? "no ring addresses" : _memory.Count == 0 ? "no memory table" : null;
        missing ??= RingTranslationError(ring);
        if (missing is not null)
        {
            if (!quiet)
            {
                Log.QueueCannotStart(_logger, ring.Index, missing);
            }

            return;
        }

        if (!_memory.TryAcquire())
        {
            return;
        }

        Virtqueue queue;
        bool indirect = (_ackedFeatures & VirtioFeatureBits.IndirectDesc) != 0;
        bool eventIndex = (_ackedFeatures & VirtioFeatureBits.EventIdx) != 0;
        try
        {
            queue = PackedRing
                ? new PackedVirtqueue(ring.Index, ring.Size, _memory, ring.Descriptor, ring.Available, ring.Used, ring.Base, indirect, eventIndex)
                : new SplitVirtqueue(ring.Index, ring.Size, _memory, ring.Descriptor, ring.Available, ring.Used, (ushort)ring.Base, indirect, eventIndex);
        }
        catch (ArgumentException ex)
        {
            _memory.Release();
            Log.QueueCannotStart(_logger, ring.Index, ex.Message);
            return;
        }

        queue.SetEnabled(ring.Enabled);
        queue.SetLog(Logging ? _log : null);
        queue.SetUsedRingLogging((ring.AddressFlags & VringAddressPayload.FlagLog) != 0, ring.LogGuestAddress);
        queue.SetCall(ring.CallDisabled ? null : ring.Call);
        queue.SetErr(ring.Err);
        ILogger logger = _logger;
        queue.OnBroken = (q, reason) =>
        {
            Log.QueueBroken(logger, q.Index, reason);
            Metrics.BrokenQueues.Add(1);
        };
        AttachInflight(ring, queue);
        Metrics.Track(queue, _device.DeviceType.ToString(), _options.SocketPath ?? $"fd{_options.InheritedFd}");
        ring.Lease = _memory;
        ring.Queue = queue;
        ring.Worker = _workers.Next();
        ring.Started = true;
        Log.QueueState(_logger, ring.Index, "started", ring.Size, ring.Enabled, ring.Base);
        _device.OnQueueStateChanged(ring.Info);
        VhostUserDevice device = _device;
        ring.Worker.Invoke(() => device.OnQueueStarted(queue));
        ring.Binding = ring.Worker.Attach(queue, ring.KickPolled ? null : ring.Kick, device.OnQueueKicked, device.OnQueueEnabledChanged);
        if ((_ackedProtocol & (ulong)VhostUserProtocolFeatures.Status) == 0 && _rings.Count(r => r.Started) == 1)
        {
            SaveRecord();
        }
    }

    /// <summary>
    /// Gives a starting queue its inflight region. A region that fails validation breaks the queue (the
    /// frontend sees its error fd) rather than letting it run untracked or on corrupt state.
    /// </summary>
    private void AttachInflight(Vring ring, Virtqueue queue)
    {
        if (_inflight is not { } area || (_ackedProtocol & (ulong)VhostUserProtocolFeatures.InflightShmfd) == 0)
        {
            return;
        }

        string? error = area.Packed != PackedRing
            ? $"queue {ring.Index}: the inflight buffer has the {(area.Packed ? "packed" : "split")} layout but the ring is {(PackedRing ? "packed" : "split")}"
            : area.QueueRegion(ring.Index) == 0
                ? $"queue {ring.Index}: the inflight buffer has regions for {area.QueueCount} queues only"
                : null;
        if (error is null && area.TryAcquire())
        {
            ring.Inflight = area;
            uint frontendBase = queue.Base;
            error = queue.AttachInflight(area.QueueRegion(ring.Index), area.QueueSize);
            if (error is null)
            {
                Log.InflightRecovered(_logger, ring.Index, queue.PendingResubmissions, frontendBase, queue.Base);
                ring.Base = queue.Base;
            }
        }

        if (error is not null)
        {
            queue.MarkBroken(error);
        }
    }

    private void StopRing(Vring ring, string why)
    {
        if (!ring.Started)
        {
            return;
        }

        if (ring.Queue is { } queue && ring.Worker is { } worker)
        {
            // After Detach returns the worker never touches the queue (or its memory lease) again.
            worker.Detach(ring.Binding!);
            VhostUserDevice device = _device;
            worker.Invoke(() => device.OnQueueStopped(queue));
            ring.Base = queue.Base;
            queue.ReleaseRetained();
            Metrics.Untrack(queue);
        }

        ring.Queue = null;
        ring.Worker = null;
        ring.Binding = null;
        ring.Lease?.Release();
        ring.Lease = null;
        ring.Inflight?.Release();
        ring.Inflight = null;
        ring.Started = false;
        Log.QueueState(_logger, ring.Index, $"stopped ({why})", ring.Size, ring.Enabled, ring.Base);
        _device.OnQueueStateChanged(ring.Info);
    }

    private void Teardown()
    {
        foreach (var r in _rings)
        {
            StopRing(r, "disconnect");
            r.Reset();
        }

        _backendChannel?.Dispose();
        _backendChannel = null;
        _log?.Release();
        _log = null;
        ReplaceInflight(null);
        GuestMemoryTable old = _memory;
        _memory = GuestMemoryTable.Empty;
        old.Release();
        _device.OnDisconnected();
    }
}
