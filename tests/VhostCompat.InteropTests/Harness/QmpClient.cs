using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace VhostCompat.InteropTests.Harness;

/// <summary>Minimal QEMU Machine Protocol client over a Unix socket (one command at a time, events skipped).</summary>
public sealed class QmpClient : IAsyncDisposable
{
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly StreamReader _reader;

    private QmpClient(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: false);
        _reader = new StreamReader(_stream, Encoding.UTF8);
    }

    public static async Task<QmpClient> ConnectAsync(string socketPath, CancellationToken cancellationToken)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), cancellationToken).ConfigureAwait(false);
            var client = new QmpClient(socket);
            await client.ReadMessageAsync(cancellationToken).ConfigureAwait(false); // greeting
            await client.ExecuteAsync("qmp_capabilities", null, cancellationToken).ConfigureAwait(false);
            return client;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Runs a command and returns its "return" value; throws <see cref="InvalidOperationException"/> on a QMP error.</summary>
    public async Task<JsonNode?> ExecuteAsync(string command, JsonObject? arguments, CancellationToken cancellationToken)
    {
        var request = new JsonObject { ["execute"] = command };
        if (arguments is not null)
        {
            request["arguments"] = arguments;
        }

        var bytes = Encoding.UTF8.GetBytes(request.ToJsonString() + "\n");
        await _stream.WriteAsync(bytes, cancellationToken).ConfigureAwait(false);
        while (true)
        {
            var msg = await ReadMessageAsync(cancellationToken).ConfigureAwait(false);
            if (msg["event"] is not null)
            {
                continue;
            }

            if (msg["error"] is JsonNode error)
            {
                throw new InvalidOperationException($"QMP {command} failed: {error.ToJsonString()}");
            }

            return msg["return"];
        }
    }

    /// <summary>Human monitor command through QMP (e.g. "info virtio-status ...").</summary>
    public async Task<string> HumanMonitorAsync(string commandLine, CancellationToken cancellationToken) =>
        (await ExecuteAsync("human-monitor-command", new JsonObject { ["command-line"] = commandLine }, cancellationToken).ConfigureAwait(false))?.GetValue<string>() ?? string.Empty;

    public async ValueTask DisposeAsync()
    {
        _reader.Dispose();
        await _stream.DisposeAsync().ConfigureAwait(false);
        _socket.Dispose();
    }

    private async Task<JsonObject> ReadMessageAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            var line = await _reader.ReadLineAsync(cancellationToken).ConfigureAwait(false)
                ?? throw new IOException("QMP connection closed");
            if (string.IsNullOrWhiteSpace(line))
            {
                continue;
            }

            return JsonNode.Parse(line) as JsonObject ?? throw new JsonException("QMP message is not an object: " + line);
        }
    }
}
