using System.Threading.Channels;
using VhostCompat.Protocol;

namespace VhostCompat.Proxy;

/// <summary>
/// The proxy's connection to the backend. One pump reads every backend message into an inbox, so the proxy notices
/// the backend going away at any moment (while waiting for QEMU too) and the session reads replies from the inbox.
/// </summary>
internal sealed class BackendLink : IAsyncDisposable
{
    // Bounded: a backend that sends what nobody asked for fills its own socket, not the proxy's memory.
    private readonly Channel<VhostUserMessage> _inbox = Channel.CreateBounded<VhostUserMessage>(new BoundedChannelOptions(4) { SingleReader = true, SingleWriter = true, FullMode = BoundedChannelFullMode.Wait });
    private readonly CancellationTokenSource _stop = new();
    private readonly CancellationTokenSource _closed = new();
    private readonly Task _pump;

    public BackendLink(VhostUserConnection connection, string name)
    {
        Connection = connection;
        Name = name;
        _pump = Task.Run(PumpAsync);
    }

    public VhostUserConnection Connection { get; }

    public string Name { get; }

    /// <summary>Completes when the backend has closed (or broken) the connection.</summary>
    public Task Closed => _inbox.Reader.Completion;

    /// <summary>Cancelled when the backend has closed (or broken) the connection.</summary>
    public CancellationToken ClosedToken => _closed.Token;

    /// <summary>Why the backend connection ended (set once <see cref="Closed"/> completes).</summary>
    public string CloseReason { get; private set; } = "open";

    private async Task PumpAsync()
    {
        try
        {
            while (await Connection.ReceiveAsync(_stop.Token).ConfigureAwait(false) is { } message)
            {
                try
                {
                    await _inbox.Writer.WriteAsync(message, _stop.Token).ConfigureAwait(false);
                }
                catch
                {
                    message.Dispose();
                    throw;
                }
            }

            CloseReason = "the backend closed the connection";
        }
        catch (OperationCanceledException)
        {
            CloseReason = "closed by the proxy";
        }
        catch (VhostUserFramingException ex)
        {
            CloseReason = $"backend framing error: {ex.Message}";
        }

        _inbox.Writer.TryComplete();
        _closed.Cancel();
    }

    /// <summary>Sends a request the proxy makes itself (the restart check) and returns the backend's reply payload.</summary>
    /// <exception cref="IOException">The backend went away, answered another request, or did not answer in time.</exception>
    public async Task<byte[]> QueryAsync(FrontendRequest request, TimeSpan timeout, CancellationToken cancellationToken)
    {
        Connection.Send((uint)request, MessageHeader.Version, ReadOnlySpan<byte>.Empty);
        using var reply = await ReadReplyAsync((uint)request, timeout, cancellationToken).ConfigureAwait(false);
        return reply.Payload;
    }

    /// <summary>Reads the reply to <paramref name="request"/>; the caller owns (and disposes) it.</summary>
    /// <exception cref="IOException">The backend went away, sent something else, or did not answer in time.</exception>
    public async Task<VhostUserMessage> ReadReplyAsync(uint request, TimeSpan timeout, CancellationToken cancellationToken)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout);
        VhostUserMessage reply;
        try
        {
            reply = await _inbox.Reader.ReadAsync(deadline.Token).ConfigureAwait(false);
        }
        catch (ChannelClosedException)
        {
            throw new BackendGoneException($"{RequestNames.Name(request)}: {CloseReason} before replying");
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new IOException($"{RequestNames.Name(request)}: the backend did not reply within {timeout.TotalSeconds:0.#} s");
        }

        if (!reply.Header.IsReply || reply.Header.Request != request)
        {
            string got = RequestNames.Name(reply.Header.Request);
            reply.Dispose();
            throw new IOException($"{RequestNames.Name(request)}: the backend sent {got} (flags 0x{reply.Header.Flags:x}) instead of its reply");
        }

        return reply;
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        try
        {
            await _pump.ConfigureAwait(false);
        }
        catch (Exception)
        {
            // The pump reports through CloseReason.
        }

        await Connection.DisposeAsync().ConfigureAwait(false);

        while (_inbox.Reader.TryRead(out var left))
        {
            left.Dispose();
        }

        _stop.Dispose();
        _closed.Dispose();
    }
}

/// <summary>
/// The backend's connection ended before it answered (it exited, or was being killed when the proxy connected: a
/// dying listener's backlog still accepts, then resets). Not a refusal: the proxy reconnects.
/// </summary>
internal sealed class BackendGoneException(string message) : IOException(message);
