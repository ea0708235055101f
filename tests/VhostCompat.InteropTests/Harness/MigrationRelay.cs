using System.Net;
using System.Net.Sockets;

namespace VhostCompat.InteropTests.Harness;

/// <summary>
/// A TCP relay between a source QEMU's <c>migrate tcp:127.0.0.1:LISTEN</c> and a destination's <c>-incoming tcp:127.0.0.1:TARGET</c>
/// that damages the SDK's device-state blob in transfer: in the source-to-destination stream it finds the blob's envelope
/// (magic "VCDS", envelope version 1, the device type) and flips one byte of the payload, so the destination's SDK finds a
/// checksum mismatch. Everything else, and the return path, passes unchanged.
/// </summary>
public sealed class MigrationRelay : IAsyncDisposable
{
    /// <summary>From the start of the envelope: its 20-byte header and the net state's 2-byte MAC count, i.e. the first MAC byte.</summary>
    public const int FlipOffset = 22;

    private readonly TcpListener _listener;
    private readonly int _target;
    private readonly byte[] _pattern;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Task> _pumps = [];
    private readonly List<TcpClient> _clients = [];
    private readonly Task _accepting;

    private MigrationRelay(int listen, int target, uint deviceType)
    {
        _target = target;
        _pattern = [(byte)'V', (byte)'C', (byte)'D', (byte)'S', 1, 0, 0, 0, (byte)deviceType, (byte)(deviceType >> 8), (byte)(deviceType >> 16), (byte)(deviceType >> 24)];
        _listener = new TcpListener(IPAddress.Loopback, listen);
        _listener.Start();
        _accepting = AcceptAsync();
    }

    /// <summary>Where in the source's stream the byte was flipped, and its value before and after; null until then.</summary>
    public (long Position, byte Before, byte After)? Flipped { get; private set; }

    /// <summary>Bytes relayed from the source to the destination.</summary>
    public long ForwardedBytes { get; private set; }

    /// <summary>Listens on 127.0.0.1:<paramref name="listen"/> and relays each connection to 127.0.0.1:<paramref name="target"/>.</summary>
    public static MigrationRelay Start(int listen, int target, uint deviceType = 1) => new(listen, target, deviceType);

    private async Task AcceptAsync()
    {
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                var source = await _listener.AcceptTcpClientAsync(_stop.Token).ConfigureAwait(false);
                var destination = new TcpClient();
                _clients.Add(source);
                _clients.Add(destination);
                await destination.ConnectAsync(IPAddress.Loopback, _target, _stop.Token).ConfigureAwait(false);
                _pumps.Add(PumpAsync(source, destination, damage: true));
                _pumps.Add(PumpAsync(destination, source, damage: false));
            }
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
        {
        }
    }

    private async Task PumpAsync(TcpClient from, TcpClient to, bool damage)
    {
        var buffer = new byte[65536];
        long position = 0;
        var matched = 0;
        long flipAt = -1;
        try
        {
            var input = from.GetStream();
            var output = to.GetStream();
            int n;
            while ((n = await input.ReadAsync(buffer, _stop.Token).ConfigureAwait(false)) > 0)
            {
                for (var i = 0; damage && Flipped is null && i < n; i++, position++)
                {
                    if (position == flipAt)
                    {
                        var before = buffer[i];
                        buffer[i] ^= 0xFF;
                        Flipped = (position, before, buffer[i]);
                        break;
                    }

                    // The pattern's first byte occurs in it only once, so a mismatch restarts at 0 (or 1 on a new 'V').
                    matched = buffer[i] == _pattern[matched] ? matched + 1 : buffer[i] == _pattern[0] ? 1 : 0;
                    if (matched == _pattern.Length)
                    {
                        flipAt = position - _pattern.Length + 1 + FlipOffset;
                        matched = 0;
                    }
                }

                await output.WriteAsync(buffer.AsMemory(0, n), _stop.Token).ConfigureAwait(false);
                if (damage)
                {
                    ForwardedBytes += n;
                }
            }

            to.Client.Shutdown(SocketShutdown.Send);
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or SocketException or ObjectDisposedException)
        {
            // One side went away: end the other as a direct connection would be.
            from.Dispose();
            to.Dispose();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        _listener.Stop();
        await _accepting.ConfigureAwait(false);
        await Task.WhenAll(_pumps).ConfigureAwait(false);
        foreach (var c in _clients)
        {
            c.Dispose();
        }

        _stop.Dispose();
    }
}
