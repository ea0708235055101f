using Microsoft.Extensions.Logging;
using VhostCompat.Interop;
using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.Backend;

/// <summary>
/// The backend-request channel of the current frontend connection (vhost-user spec, "Back-end communication"): the
/// socket the frontend hands over with SET_BACKEND_REQ_FD when BACKEND_REQ was negotiated, on which the backend sends
/// requests of its own. A device opts in with <see cref="VhostUserProtocolFeatures.BackendReq"/> (and
/// <see cref="VhostUserProtocolFeatures.Config"/> for config notifications) and reaches the channel through
/// <see cref="VhostUserDevice.BackendRequests"/>. Thread-safe; every method returns at once (never waits for the
/// frontend), so it may be called from a device callback, a queue worker or any other thread.
/// </summary>
public sealed class BackendChannel
{
    private readonly Lock _lock = new();
    private FileDescriptor? _socket;
    private bool _config;
    private ILogger? _logger;

    internal BackendChannel()
    {
    }

    /// <summary>True while a frontend is connected and has given the channel.</summary>
    public bool IsOpen
    {
        get
        {
            lock (_lock)
            {
                return _socket is not null;
            }
        }
    }

    /// <summary>
    /// Tells the frontend that the device's config space changed (CONFIG_CHANGE_MSG): QEMU then reads it again with
    /// GET_CONFIG and raises a config interrupt in the guest (virtio-blk: the driver reads the new capacity). Needs
    /// CONFIG negotiated and the channel open. Sent without NEED_REPLY, so nothing waits for the frontend.
    /// </summary>
    /// <returns>False (and a warning in the log) when the channel is closed, CONFIG was not negotiated or the send failed.</returns>
    public bool NotifyConfigChanged()
    {
        lock (_lock)
        {
            const string Name = "CONFIG_CHANGE_MSG";
            string? error = _socket is null ? "the frontend has not set up the backend-request channel (SET_BACKEND_REQ_FD)"
                : !_config ? "protocol feature CONFIG was not negotiated"
                : null;
            if (error is null)
            {
                byte[] frame = MessageFraming.Encode((uint)BackendRequest.ConfigChangeMsg, MessageHeader.Version, []);
                int n = Libc.SendWithFds(_socket!.Value, frame, default);
                error = n == frame.Length ? null : n < 0 ? Libc.ErrorText("sendmsg", -n) : $"short send ({n} of {frame.Length} bytes)";
            }

            if (_logger is { } logger)
            {
                if (error is null)
                {
                    Log.BackendRequestSent(logger, Name);
                }
                else
                {
                    Log.BackendRequestFailed(logger, Name, error);
                }
            }

            return error is null;
        }
    }

    /// <summary>Takes the channel of a new SET_BACKEND_REQ_FD (closing any previous one).</summary>
    internal void Open(FileDescriptor socket, bool configNegotiated, ILogger logger)
    {
        lock (_lock)
        {
            _socket?.Dispose();
            _socket = socket;
            _config = configNegotiated;
            _logger = logger;
        }
    }

    /// <summary>Closes the channel (disconnect).</summary>
    internal void Close()
    {
        lock (_lock)
        {
            _socket?.Dispose();
            _socket = null;
            _config = false;
        }
    }
}
