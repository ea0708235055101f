using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;

namespace VhostCompat.Tests.Support;

/// <summary>
/// A Unix-socket QMP monitor played by a script: one connection at a time, each handed to <c>script</c>. Honest
/// scripts answer from a capture of a real QEMU; hostile ones send garbage, huge lines, close early or never answer.
/// </summary>
internal sealed class FakeQmpServer : IAsyncDisposable
{
    private readonly Socket _listener = new(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _run;

    public FakeQmpServer(string path, Func<QmpPeer, CancellationToken, Task> script)
    {
        Path = path;
        _listener.Bind(new UnixDomainSocketEndPoint(path));
        _listener.Listen(4);
        _run = Task.Run(() => ServeAsync(script, _stop.Token));
    }

    public string Path { get; }

    /// <summary>The commands received, in order, over all connections.</summary>
    public List<string> Commands { get; } = [];

    /// <summary>
    /// Plays the QEMU of <paramref name="capture"/>, answering every command with its captured reply, except qom-get
    /// when the VM is to run <paramref name="machineType"/> instead; an event precedes each query-machines reply.
    /// </summary>
    public static Func<QmpPeer, CancellationToken, Task> Honest(JsonObject capture, string? machineType = null) => async (peer, ct) =>
    {
        await peer.SendAsync(capture["greeting"]!.ToJsonString(), ct);
        while (await peer.ReadCommandAsync(ct) is { } command)
        {
            if (command == "query-machines")
            {
                await peer.SendAsync("""{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RTC_CHANGE", "data": {"offset": 0}}""", ct);
            }

            await peer.SendAsync(HonestReply(capture, command, machineType), ct);
        }
    };

    /// <summary>Greets, then answers the commands before <paramref name="command"/> honestly and that one with the line <paramref name="reply"/>.</summary>
    public static Func<QmpPeer, CancellationToken, Task> AnswersWith(JsonObject capture, string command, string reply) =>
        AnswersWith(capture, command, Encoding.UTF8.GetBytes(reply + "\n"));

    /// <summary>Greets, then answers the commands before <paramref name="command"/> honestly and that one with <paramref name="reply"/> (bytes sent as they are).</summary>
    public static Func<QmpPeer, CancellationToken, Task> AnswersWith(JsonObject capture, string command, byte[] reply) => async (peer, ct) =>
    {
        await peer.SendAsync(capture["greeting"]!.ToJsonString(), ct);
        while (await peer.ReadCommandAsync(ct) is { } received)
        {
            await peer.SendRawAsync(received == command ? reply : Encoding.UTF8.GetBytes(HonestReply(capture, received, null) + "\n"), ct);
        }
    };

    private static string HonestReply(JsonObject capture, string command, string? machineType) => command == "qom-get" && machineType is not null
        ? new JsonObject { ["return"] = machineType + "-machine" }.ToJsonString()
        : capture["replies"]![command]?.ToJsonString() ?? new JsonObject { ["error"] = new JsonObject { ["class"] = "CommandNotFound", ["desc"] = $"The command {command} has not been found" } }.ToJsonString();

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Dispose();
        try
        {
            await _run;
        }
        catch (OperationCanceledException)
        {
        }
        catch (SocketException)
        {
        }
        catch (ObjectDisposedException)
        {
        }

        _stop.Dispose();
        File.Delete(Path);
    }

    private async Task ServeAsync(Func<QmpPeer, CancellationToken, Task> script, CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            using var socket = await _listener.AcceptAsync(ct);
            await using var stream = new NetworkStream(socket, ownsSocket: false);
            try
            {
                await script(new QmpPeer(stream, this), ct);
            }
            catch (IOException)
            {
                // The client hung up first: what hostile scripts expect of a client that gives up.
            }
        }
    }

    /// <summary>The server's end of one connection.</summary>
    internal sealed class QmpPeer(NetworkStream stream, FakeQmpServer server)
    {
        private readonly StreamReader _reader = new(stream, new UTF8Encoding(false), false, 4096, leaveOpen: true);

        public Task SendAsync(string line, CancellationToken ct) => SendRawAsync(Encoding.UTF8.GetBytes(line + "\n"), ct);

        public async Task SendRawAsync(byte[] bytes, CancellationToken ct)
        {
            await stream.WriteAsync(bytes, ct);
            await stream.FlushAsync(ct);
        }

        /// <summary>The next command's "execute" (recorded in <see cref="Commands"/>), or null when the client hung up.</summary>
        public async Task<string?> ReadCommandAsync(CancellationToken ct)
        {
            string? line = await _reader.ReadLineAsync(ct);
            if (line is null)
            {
                return null;
            }

            string command = (string?)JsonNode.Parse(line)?["execute"] ?? "?";
            lock (server.Commands)
            {
                server.Commands.Add(command);
            }

            return command;
        }

        /// <summary>Waits until the client hangs up (or the server stops), answering nothing.</summary>
        public async Task SilenceAsync(CancellationToken ct)
        {
            var buffer = new byte[256];
            while (await stream.ReadAsync(buffer, ct) > 0)
            {
            }
        }
    }
}
