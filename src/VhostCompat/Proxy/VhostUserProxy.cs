using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using VhostCompat.Compat;
using VhostCompat.Frontend;
using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.Proxy;

/// <summary>Where a <see cref="VhostUserProxy"/> is in its cycle.</summary>
public enum VhostUserProxyState
{
    /// <summary>Not running yet.</summary>
    Stopped,

    /// <summary>Reaching the backend (connecting with backoff, or waiting for it to connect).</summary>
    WaitingForBackend,

    /// <summary>
    /// The backend cannot serve the pinned profile or honour the acked-state record: the frontend is not let in, so it
    /// never sees the narrower offer (<see cref="VhostUserProxy.Problems"/> says why; the backend is checked again periodically).
    /// </summary>
    Refused,

    /// <summary>The backend is checked; waiting for the frontend.</summary>
    WaitingForFrontend,

    /// <summary>Forwarding a frontend session.</summary>
    Serving,
}

/// <summary>
/// A vhost-user proxy that brings VhostCompat's guarantees to a backend not built on the SDK (DPDK's vhost library,
/// qemu-storage-daemon, …): it forwards every request and reply with its fds while memory, eventfds and the backend
/// channel go to the backend untouched; pins the interface to a profile with the SDK's own rules; writes the
/// acked-state record; and, when the backend restarts, checks the new one can honour the record before the frontend
/// is let in. Every frontend request passes the SDK's message rules first, so a malformed one never reaches the backend.
/// </summary>
public sealed class VhostUserProxy
{
    private readonly VhostUserProxyOptions _options;
    private readonly Protocol.UnixSocketAccess? _access;
    private readonly ILogger _logger;
    private readonly AckedStateStore? _store;
    private readonly SessionTrace? _trace;
    private uint _sessions;
    private int _refusedBefore;
    private volatile ProxySession? _current;

    /// <summary>Creates a proxy; <see cref="ArgumentException"/> names a bad option.</summary>
    public VhostUserProxy(VhostUserProxyOptions options, ILoggerFactory? loggerFactory = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _options = options;
        _access = options.Access; // the group is looked up once, not at every listen
        _logger = (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger("VhostCompat.Proxy");
        _store = options.StateDirectory is null ? null : new AckedStateStore(options.StateDirectory);
        _trace = options.Trace is null ? null : new SessionTrace(options.Trace, options.TraceJson) { DeviceType = options.DeviceType };
        if (options.CompatProfile is { } pin && options.Catalog is null && !InterfaceProfile.IsValueList(pin))
        {
            throw new ArgumentException($"profile id '{pin}' given without a catalog; give the catalog or a value list", nameof(options));
        }
    }

    /// <summary>The current state; <see cref="StateChanged"/> reports every change.</summary>
    public VhostUserProxyState State { get; private set; }

    /// <summary>Why the backend was last refused (feature names, limits); empty when it was not.</summary>
    public IReadOnlyList<string> Problems { get; private set; } = [];

    /// <summary>The profile served in the current (or last) session; null = transparent.</summary>
    public InterfaceProfile? Profile { get; private set; }

    /// <summary>The acked-state record as last loaded or saved, or null.</summary>
    public AckedStateRecord? Record { get; private set; }

    /// <summary>Frontend sessions served so far.</summary>
    public int Sessions => (int)_sessions;

    /// <summary>Requests the shield refused so far (the current session's included).</summary>
    public int RefusedRequests => _refusedBefore + (_current?.Refused ?? 0);

    /// <summary>Raised on every state change (on the proxy's own task).</summary>
    public event Action<VhostUserProxyState>? StateChanged;

    /// <summary>
    /// Runs until <paramref name="cancellationToken"/> is cancelled: outlives every session (VM reboot, QEMU restart,
    /// backend restart). Throws only for local setup errors (a path another live process serves, a damaged record directory).
    /// </summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        Socket? backendListener = _options.BackendListenPath is { } bl ? UnixListener.Listen(bl, _logger, backlog: 4, access: _access) : null;
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                try
                {
                    await CycleAsync(backendListener, cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
                {
                    break;
                }
            }
        }
        finally
        {
            backendListener?.Dispose();
            if (_options.BackendListenPath is { } path)
            {
                UnixListener.TryUnlink(path);
            }

            if (_options.ListenPath is { } listen)
            {
                UnixListener.TryUnlink(listen);
            }

            SetState(VhostUserProxyState.Stopped);
        }
    }

    // One backend connection: check it, let one frontend in, forward until either side goes away.
    private async Task CycleAsync(Socket? backendListener, CancellationToken ct)
    {
        SetState(VhostUserProxyState.WaitingForBackend);
        await using var backend = await ProxyEndpoints.BackendAsync(_options, backendListener, _logger, ct).ConfigureAwait(false);
        ResolvedOffer resolved;
        BackendCapabilities live;
        try
        {
            live = await QueryAsync(backend, ct).ConfigureAwait(false);
            Record = _store?.Load(_options.RecordKey);
            // The restart check compares what the query saw: features, protocol features and queues (ring limit and config are not probed in-band).
            resolved = OfferResolver.Resolve(live, [], _options.Catalog, _options.CompatProfile, Record, catalogLatestByDefault: false,
                f => f.Code is not ("ring-size" or "config-mismatch" or "config-size"));
        }
        catch (BackendGoneException ex)
        {
            // A backend that went away during the check (restarting, or killed while the proxy connected) is not
            // refused for it: the proxy waits for the next one.
            Log.ProxySessionEnded(_logger, 0, $"backend went away during the check: {ex.Message}");
            await Task.Delay(_options.ReconnectInitialDelay, ct).ConfigureAwait(false);
            return;
        }
        catch (Exception ex) when (ex is IOException or AckedStateCorruptException or ProfileFormatException)
        {
            Refuse([ex.Message]);
            await Task.Delay(_options.ReconnectMaxDelay, ct).ConfigureAwait(false);
            return;
        }

        if (!resolved.Servable)
        {
            Refuse(resolved.Problems);
            await Task.Delay(_options.ReconnectMaxDelay, ct).ConfigureAwait(false);
            return;
        }

        Problems = [];
        Profile = resolved.Pin?.Profile;
        Log.ProxyBackendChecked(_logger, backend.Name, live.VirtioFeatures, resolved.Offer.VirtioFeatures, Profile?.ToString() ?? "(transparent)");
        SetState(VhostUserProxyState.WaitingForFrontend);
        await using var frontend = await ProxyEndpoints.FrontendAsync(_options, _access, backend, _logger, ct).ConfigureAwait(false);
        if (frontend is null)
        {
            Log.ProxySessionEnded(_logger, 0, $"backend: {backend.CloseReason} while waiting for the frontend");
            return;
        }

        uint id = ++_sessions;
        SetState(VhostUserProxyState.Serving);
        _trace?.Event(id, "frontend connected");
        var offer = resolved.Offer;
        var shield = new MessageShield(_options.DeviceType, offer.VirtioFeatures, offer.ProtocolFeatures & (ulong)CarriedProtocolFeatures.Mask,
            offer.Queues, offer.MaxQueueSize, _options.RequireSealedMemory);
        var records = _store is null ? null : new ProxyRecordKeeper(_store, _options.RecordKey, _options.DeviceType, resolved.Pin, offer.Queues, Record);
        var session = new ProxySession(id, frontend, backend, shield, resolved.Pin, records, _trace, _options, _logger);
        _current = session;
        string reason = await session.RunAsync(ct).ConfigureAwait(false);
        _refusedBefore += session.Refused;
        _current = null;
        Record = records?.Current ?? Record;
        _trace?.Event(id, "session ended: " + reason);
        Log.ProxySessionEnded(_logger, id, reason);
    }

    // The restart check's questions, asked on the backend connection before the frontend is let in: GET_FEATURES,
    // GET_PROTOCOL_FEATURES and, with MQ acked alone, GET_QUEUE_NUM. QEMU asks (and acks) the same again.
    private async Task<BackendCapabilities> QueryAsync(BackendLink backend, CancellationToken ct)
    {
        ulong features = U64(await backend.QueryAsync(FrontendRequest.GetFeatures, _options.BackendReplyTimeout, ct).ConfigureAwait(false), "GET_FEATURES");
        ulong protocol = 0;
        if ((features & Virtio.VirtioFeatureBits.ProtocolFeatures) != 0)
        {
            protocol = U64(await backend.QueryAsync(FrontendRequest.GetProtocolFeatures, _options.BackendReplyTimeout, ct).ConfigureAwait(false), "GET_PROTOCOL_FEATURES");
        }

        bool net = _options.DeviceType == Virtio.VirtioDeviceType.Net;
        int queues = net ? 2 : 1;
        ulong? queueNum = null;
        if ((protocol & (ulong)VhostUserProtocolFeatures.Mq) != 0)
        {
            // GET_QUEUE_NUM is valid only once MQ is acked; the frontend's own SET_PROTOCOL_FEATURES replaces this one.
            backend.Connection.Send((uint)FrontendRequest.SetProtocolFeatures, MessageHeader.Version, U64Payload.Encode((ulong)VhostUserProtocolFeatures.Mq));
            queueNum = U64(await backend.QueryAsync(FrontendRequest.GetQueueNum, _options.BackendReplyTimeout, ct).ConfigureAwait(false), "GET_QUEUE_NUM");
            queues = (int)Math.Max(net ? 2 * Math.Min(queueNum.Value, 127) : Math.Min(queueNum.Value, 255), 1);
        }

        protocol &= (ulong)CarriedProtocolFeatures.Mask;
        return new BackendCapabilities(_options.DeviceType, features, protocol, queues, 32768, 0, null, _options.Catalog, 8, queueNum);
    }

    private static ulong U64(byte[] payload, string what) =>
        payload.Length == U64Payload.Size ? U64Payload.Read(payload) : throw new IOException($"{what}: the backend replied with {payload.Length} bytes");

    private void Refuse(IReadOnlyList<string> problems)
    {
        Problems = problems;
        Metrics.ProxyBackendRefusals.Add(1);
        Log.ProxyBackendRefused(_logger, _options.BackendPath ?? _options.BackendListenPath!, string.Join("; ", problems));
        SetState(VhostUserProxyState.Refused);
    }

    private void SetState(VhostUserProxyState state)
    {
        if (State == state)
        {
            return;
        }

        State = state;
        StateChanged?.Invoke(state);
    }

    /// <summary>
    /// The capability document of the proxied backend as the frontend would see it through this proxy: the backend
    /// probed live (<c>vhost-compat probe</c>'s questions, on a connection of its own), restricted to the protocol
    /// features the proxy carries, under the pinned profile if any, with the operator's catalog.
    /// </summary>
    /// <exception cref="IOException">The backend cannot be reached or answered badly.</exception>
    /// <exception cref="ProfileFormatException">The pin is invalid or the backend cannot serve it.</exception>
    public static async Task<BackendCapabilities> ProbeAsync(VhostUserProxyOptions options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.BackendPath is not { } path)
        {
            throw new ArgumentException("the backend must be listening (BackendPath) to be probed", nameof(options));
        }

        BackendCapabilities probed;
        try
        {
            probed = await BackendProbe.ProbeAsync(path, options.DeviceType, options.MessageTimeout, probeRing: true, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is SocketException or TimeoutException or VhostUserRequestException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            throw new IOException($"{path}: {ex.Message}", ex);
        }

        var live = new BackendCapabilities(probed.DeviceType, probed.VirtioFeatures, probed.ProtocolFeatures & (ulong)CarriedProtocolFeatures.Mask, probed.Queues,
            probed.MaxQueueSize, probed.ConfigSize, probed.Config, options.Catalog, probed.MaxMemorySlots, probed.QueueNumReply);
        var resolved = OfferResolver.Resolve(live, [], options.Catalog, options.CompatProfile, null, catalogLatestByDefault: false);
        return resolved.Servable ? resolved.Offer : throw new ProfileFormatException(null, string.Join("; ", resolved.Problems));
    }
}
