using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using VhostCompat.Compat;
using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.Backend;

/// <summary>
/// Serves one <see cref="VhostUserDevice"/> to a vhost-user frontend over a Unix socket, in server
/// mode (listen, serve one frontend at a time, accept the next one on the same listening socket)
/// or client mode (connect with bounded exponential backoff, reconnect after the frontend goes away).
/// </summary>
public sealed class VhostUserBackend
{
    private readonly VhostUserDevice _device;
    private readonly VhostUserBackendOptions _options;
    private readonly ILogger _logger;
    private readonly ILoggerFactory _loggerFactory;

    /// <summary>Creates a backend. Options are validated here; <see cref="ArgumentException"/> names a bad one.</summary>
    public VhostUserBackend(VhostUserDevice device, VhostUserBackendOptions options, ILoggerFactory? loggerFactory = null)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _device = device;
        _options = options;
        _loggerFactory = loggerFactory ?? NullLoggerFactory.Instance;
        _logger = _loggerFactory.CreateLogger("VhostCompat.Backend");
        _pin = ProfilePin.Resolve(device, device.Catalog, options.CompatProfile);
        _access = UnixSocketAccess.From(options.SocketMode, options.SocketGroup); // the group is looked up once, not at every listen
        if (options.StateDirectory is { } dir)
        {
            _store = new AckedStateStore(dir);
            // An inherited fd has no path: its key is "fd-N", never a path resolved against the current directory.
            _stateKey = options.StateKey ?? (options.SocketPath is { Length: > 0 } path ? AckedStateStore.DefaultKey(path)
                : "fd-" + (options.InheritedFd ?? 0).ToString(System.Globalization.CultureInfo.InvariantCulture));
            if (!AckedStateStore.IsValidKey(_stateKey))
            {
                throw new ArgumentException($"StateKey '{_stateKey}' is not a valid record key", nameof(options));
            }
        }
    }

    private readonly UnixSocketAccess? _access;
    private ProfilePin? _pin;
    private AckedStateRecord? _record;
    private bool _recordChecked;
    private readonly AckedStateStore? _store;
    private readonly string? _stateKey;

    /// <summary>The interface profile the backend offers (pinned, from a saved record, or the catalog's latest); null = the device's whole capability.</summary>
    public InterfaceProfile? Profile => _pin?.Profile;

    /// <summary>
    /// Loads the saved acked-state record (if a state directory is configured) and checks this build
    /// can honour it; a record made under a profile pins that profile again. Called by <see cref="RunAsync"/>.
    /// </summary>
    /// <exception cref="CompatibilityException">The record asks for something this build cannot offer.</exception>
    /// <exception cref="AckedStateCorruptException">The record file is damaged (it is left in place).</exception>
    public AckedStateRecord? LoadRecord()
    {
        if (_store is null)
        {
            return null;
        }

        if (_recordChecked)
        {
            return _record;
        }

        AckedStateRecord? record = _store.Load(_stateKey!);
        if (record is null)
        {
            _recordChecked = true;
            return null;
        }

        // The one resolver (OfferResolver, shared with the proxy): the record's profile is served again without a pin,
        // an explicit pin must equal it, and the resulting offer must honour the record.
        var capability = BackendCapabilities.FromDevice(_device, _options, _device.Catalog);
        byte[] config = DeviceCompat.Describe(_device).Config;
        var resolved = OfferResolver.Resolve(capability, config, _device.Catalog, _options.CompatProfile, record, catalogLatestByDefault: true);
        if (!resolved.Servable)
        {
            throw new CompatibilityException($"acked-state record '{record.Key}' cannot be honoured by this build", resolved.Problems);
        }

        _pin = resolved.Pin;
        Log.RecordLoaded(_logger, record.Key, record.AckedFeatures, record.Profile?.ToString() ?? "(none)");
        _record = record;
        _recordChecked = true;
        return record;
    }

    private void SaveRecord(AckedStateRecord record)
    {
        try
        {
            _store!.Save(record);
            Log.RecordSaved(_logger, record.Key, record.AckedFeatures);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or AckedStateCorruptException)
        {
            Log.RecordSaveFailed(_logger, record.Key, ex.Message);
        }
    }

    /// <summary>
    /// What this backend offers now (features, protocol features, queues, ring limit, GET_QUEUE_NUM, config), under its
    /// pin or saved record: the object every connection serves and the capability document renders.
    /// </summary>
    public BackendCapabilities Offer => DeviceOffer.For(DeviceCompat.Describe(_device), DeviceCompat.SlotsOf(_options), _pin, _device.Catalog);

    /// <summary>Virtio features offered in GET_FEATURES (the device's plus VHOST_USER_F_PROTOCOL_FEATURES).</summary>
    public ulong OfferedFeatures => Offer.VirtioFeatures;

    /// <summary>Protocol features offered in GET_PROTOCOL_FEATURES.</summary>
    public VhostUserProtocolFeatures OfferedProtocolFeatures => (VhostUserProtocolFeatures)Offer.ProtocolFeatures;

    /// <summary>Raised (on the session's thread) after each frontend connection ends, with the reason.</summary>
    public event Action<string>? SessionEnded;

    /// <summary>
    /// Runs until <paramref name="cancellationToken"/> is cancelled (or, for a connected inherited fd
    /// or client mode without reconnect, until the frontend goes away). Never throws for anything a
    /// frontend does; throws for local setup errors (socket path in use by a live backend, bad fd).
    /// </summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        VhostUserWorkerPool? ownPool = null;
        if (_options.WorkerPool is null)
        {
            ownPool = new VhostUserWorkerPool(_options.Workers, _options.BusyPoll, _loggerFactory);
        }

        _pool = _options.WorkerPool ?? ownPool!;
        try
        {
            LoadRecord();
            await RunCoreAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            ownPool?.Dispose();
        }
    }

    private VhostUserWorkerPool? _pool;

    private async Task RunCoreAsync(CancellationToken cancellationToken)
    {
        if (_options.InheritedFd is int fd)
        {
            var socket = new Socket(new SafeSocketHandle(fd, ownsHandle: true));
            bool listening = (int)socket.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.AcceptConnection)! != 0;
            if (!listening)
            {
                await ServeAsync(socket, cancellationToken).ConfigureAwait(false);
                return;
            }

            using (socket)
            {
                await AcceptLoopAsync(socket, $"fd {fd}", cancellationToken).ConfigureAwait(false);
            }

            return;
        }

        string path = _options.SocketPath!;
        if (_options.Mode == VhostUserSocketMode.Client)
        {
            await ClientLoopAsync(path, cancellationToken).ConfigureAwait(false);
            return;
        }

        using Socket listener = Listen(path);
        try
        {
            await AcceptLoopAsync(listener, path, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            TryUnlink(path);
        }
    }

    private Socket Listen(string path) => UnixListener.Listen(path, _logger, access: _access);

    private static void TryUnlink(string path) => UnixListener.TryUnlink(path);

    private async Task AcceptLoopAsync(Socket listener, string name, CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            Socket connection;
            try
            {
                connection = await listener.AcceptAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }

            await ServeAsync(connection, cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task ClientLoopAsync(string path, CancellationToken cancellationToken)
    {
        TimeSpan delay = _options.ReconnectInitialDelay;
        while (!cancellationToken.IsCancellationRequested)
        {
            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), cancellationToken).ConfigureAwait(false);
            }
            catch (SocketException ex)
            {
                socket.Dispose();
                Log.ConnectRetry(_logger, path, ex.SocketErrorCode.ToString(), (long)delay.TotalMilliseconds);
                try
                {
                    await Task.Delay(delay, cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }

                delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, _options.ReconnectMaxDelay.Ticks));
                continue;
            }
            catch (OperationCanceledException)
            {
                socket.Dispose();
                return;
            }

            delay = _options.ReconnectInitialDelay;
            await ServeAsync(socket, cancellationToken).ConfigureAwait(false);
            if (!_options.Reconnect)
            {
                return;
            }
        }
    }

    /// <summary>Serves one connected frontend until it goes away. Takes ownership of <paramref name="socket"/>.</summary>
    internal async Task<string> ServeAsync(Socket socket, CancellationToken cancellationToken)
    {
        string id = $"fd {(int)socket.SafeHandle.DangerousGetHandle()}";
        Log.Connected(_logger, id);
        Metrics.Connections.Add(1);
        var connection = new VhostUserConnection(socket, _options.MessageTimeout);
        string reason;
        try
        {
            var session = new BackendSession(_device, _options, _pool!, _logger, _pin, _store is null ? null : r => SaveRecord(r), _stateKey, Offer);
            reason = await session.RunAsync(connection, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            // A bug here must not take the process (and every other device) down.
            Log.SessionFault(_logger, ex, ex.Message);
            reason = ex.Message;
        }
        finally
        {
            await connection.DisposeAsync().ConfigureAwait(false);
        }

        Log.Disconnected(_logger, id, reason);
        SessionEnded?.Invoke(reason);
        return reason;
    }
}
