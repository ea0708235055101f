using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using VhostCompat.Protocol;

namespace VhostCompat.Proxy;

/// <summary>
/// How the proxy reaches its two peers, in either direction: the backend as a server (connect with backoff) or as a
/// client (accept on a socket kept listening); the frontend as a client (listen only while a checked backend waits
/// for it, and remove the path once it is in, so a frontend that reconnects meanwhile finds no socket, exactly as when a backend is down) or
/// as a server (connect with backoff).
/// </summary>
internal static class ProxyEndpoints
{
    public static async Task<BackendLink> BackendAsync(VhostUserProxyOptions options, Socket? listener, ILogger logger, CancellationToken ct)
    {
        if (listener is not null)
        {
            Socket accepted = await listener.AcceptAsync(ct).ConfigureAwait(false);
            Log.ProxyConnected(logger, "backend", options.BackendListenPath!);
            return new BackendLink(new VhostUserConnection(accepted, options.MessageTimeout), options.BackendListenPath!);
        }

        Socket socket = await ConnectWithBackoffAsync(options.BackendPath!, "backend", options, logger, ct).ConfigureAwait(false);
        return new BackendLink(new VhostUserConnection(socket, options.MessageTimeout), options.BackendPath!);
    }

    /// <summary>The frontend connection, or null when the backend went away first.</summary>
    public static async Task<VhostUserConnection?> FrontendAsync(VhostUserProxyOptions options, UnixSocketAccess? access, BackendLink backend, ILogger logger, CancellationToken ct)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct, backend.ClosedToken);
        try
        {
            Socket socket;
            if (options.ListenPath is { } path)
            {
                using Socket listener = UnixListener.Listen(path, logger, access: access);
                try
                {
                    socket = await listener.AcceptAsync(cts.Token).ConfigureAwait(false);
                }
                finally
                {
                    // One frontend per checked backend: until the next check nothing listens, and the path is gone.
                    UnixListener.TryUnlink(path);
                }

                Log.ProxyConnected(logger, "frontend", path);
            }
            else
            {
                socket = await ConnectWithBackoffAsync(options.FrontendPath!, "frontend", options, logger, cts.Token).ConfigureAwait(false);
            }

            return new VhostUserConnection(socket, options.MessageTimeout);
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            return null;
        }
    }

    private static async Task<Socket> ConnectWithBackoffAsync(string path, string peer, VhostUserProxyOptions options, ILogger logger, CancellationToken ct)
    {
        TimeSpan delay = options.ReconnectInitialDelay;
        while (true)
        {
            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), ct).ConfigureAwait(false);
                Log.ProxyConnected(logger, peer, path);
                return socket;
            }
            catch (SocketException ex)
            {
                socket.Dispose();
                Log.ConnectRetry(logger, path, ex.SocketErrorCode.ToString(), (long)delay.TotalMilliseconds);
            }
            catch
            {
                socket.Dispose();
                throw;
            }

            await Task.Delay(delay, ct).ConfigureAwait(false);
            delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, options.ReconnectMaxDelay.Ticks));
        }
    }
}
