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
    public static Socket Listen(string path, ILogger logger, int backlog = 1, UnixSocketAccess? access = null)
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
            access?.ApplyTo(temp);
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

/// <summary>
/// Who may connect to a listening socket: its permission bits and group (as OVS's vhost socket directory has). Applied
/// before the socket is renamed into place, so a frontend never sees it with other permissions.
/// </summary>
internal sealed record UnixSocketAccess(UnixFileMode? Mode, int? GroupId)
{
    /// <summary>The access for a mode and a group (name in /etc/group or numeric gid); null when neither is set.</summary>
    /// <exception cref="ArgumentException">The group is unknown, or the mode has bits beyond 0777.</exception>
    public static UnixSocketAccess? From(UnixFileMode? mode, string? group)
    {
        if (mode is null && group is null)
        {
            return null;
        }

        if (mode is { } m && ((int)m & ~0x1FF) != 0)
        {
            throw new ArgumentException($"socket mode {System.Convert.ToString((int)m, 8)} has bits beyond 0777", nameof(mode));
        }

        return new UnixSocketAccess(mode, group is null ? null : ResolveGroup(group));
    }

    /// <summary>A numeric gid, or the gid of a group named in /etc/group.</summary>
    /// <exception cref="ArgumentException">No such group.</exception>
    public static int ResolveGroup(string group)
    {
        ArgumentNullException.ThrowIfNull(group);
        if (int.TryParse(group, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int gid))
        {
            return gid;
        }

        if (File.Exists("/etc/group"))
        {
            foreach (string line in File.ReadLines("/etc/group"))
            {
                string[] f = line.Split(':');
                if (f.Length >= 3 && f[0] == group && int.TryParse(f[2], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out gid))
                {
                    return gid;
                }
            }
        }

        throw new ArgumentException($"group '{group}' is not in /etc/group (give a group name or a numeric gid)", nameof(group));
    }

    public void ApplyTo(string path)
    {
        if (GroupId is { } gid && !Interop.Libc.TryChangeGroup(path, gid, out int errno))
        {
            throw new IOException($"{path}: cannot give the socket group {gid}: {Interop.Libc.ErrorText("chown", errno).TrimEnd()}");
        }

        if (Mode is { } mode && !OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(path, mode);
        }
    }
}
