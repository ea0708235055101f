using System.Net.Sockets;
using Microsoft.Extensions.Logging;

namespace VhostCompat.Protocol;

/// <summary>Listening Unix sockets for vhost-user endpoints (the SDK backend, the proxy's frontend and backend sides).</summary>
internal static class UnixListener
{
    /// <summary>
    /// Listens on <paramref name="path"/>: refuses to take over a socket a live process serves, removes a stale one,
    /// and binds under a temporary name renamed over the final path, so the path never names a socket that is not
    /// yet listening.
    /// </summary>
    /// <exception cref="IOException">Another live process serves the path.</exception>
    /// <exception cref="SocketException">The socket cannot be bound (missing directory, path too long, no permission).</exception>
    public static Socket Listen(string path, ILogger logger, int backlog = 1)
    {
        if (File.Exists(path) || Directory.Exists(path))
        {
            using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                probe.Connect(new UnixDomainSocketEndPoint(path));
                throw new IOException($"{path} is served by another live process");
            }
            catch (SocketException)
            {
                Log.StaleSocketRemoved(logger, path);
            }
        }

        // A short temporary name in the same directory, so it fits sun_path whenever the final path does.
        string temp = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, $".vc{Environment.ProcessId % 100000}{Random.Shared.Next(1000, 9999)}");
        var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            listener.Bind(new UnixDomainSocketEndPoint(temp));
            listener.Listen(backlog);
            File.Move(temp, path, overwrite: true);
        }
        catch
        {
            listener.Dispose();
            TryUnlink(temp);
            throw;
        }

        Log.Listening(logger, path);
        return listener;
    }

    /// <summary>Removes a socket file, ignoring a missing one or one we may not remove.</summary>
    public static void TryUnlink(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
