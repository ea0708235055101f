using System.Collections.Concurrent;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using VhostCompat.IntegrationTests.Support;
using VhostCompat.Interop;
using VhostCompat.Protocol;
using VhostCompat.Proxy;
using VhostCompat.Virtio;

namespace VhostCompat.IntegrationTests;

/// <summary>
/// The proxy's shield in front of a scripted backend that records every request it receives: hostile messages that
/// crash or corrupt DPDK 22.11 and qemu-storage-daemon 7.2 when sent to them directly (docs/proxy-shield.md) never
/// reach the backend, and the proxy stays up and serves the next well-formed session.
/// </summary>
public sealed class ProxyShieldTests : IAsyncLifetime
{
    private const ulong Uva = 0x7f00_0000_0000, Mib = 1 << 20;
    private readonly string _dir = Directory.CreateTempSubdirectory("vhostcompat-shield-").FullName;
    private readonly CancellationTokenSource _stop = new();
    private ScriptedBackend _backend = null!;
    private VhostUserProxy _proxy = null!;
    private Task _run = null!;

    private string Front => Path.Combine(_dir, "front.sock");

    public async Task InitializeAsync()
    {
        _backend = new ScriptedBackend(Path.Combine(_dir, "backend.sock"));
        _proxy = new VhostUserProxy(new VhostUserProxyOptions { ListenPath = Front, BackendPath = _backend.Path, DeviceType = VirtioDeviceType.Net, MessageTimeout = TimeSpan.FromSeconds(1) });
        _run = Task.Run(() => _proxy.RunAsync(_stop.Token));
        await WaitAsync(() => File.Exists(Front) && _proxy.State == VhostUserProxyState.WaitingForFrontend, "the proxy listening");
    }

    public async Task DisposeAsync()
    {
        await _stop.CancelAsync();
        await _run.WaitAsync(TimeSpan.FromSeconds(10));
        await _backend.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }

    public static TheoryData<string> Cases => new()
    {
        "b9-short-memfd", "b11-region-2^46", "b5-gpa-wraps", "a15-vring-num-index-255", "a4-short-set-vring-num", "c12-kick-is-directory", "a3-size-ffffffff", "a8-reply-bit",
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Hostile_message_never_reaches_the_backend_and_the_proxy_serves_the_next_session(string name)
    {
        var (hostile, expectAck) = name switch
        {
            "b9-short-memfd" => (FrontendRequest.SetMemTable, true),
            "b11-region-2^46" => (FrontendRequest.SetMemTable, true),
            "b5-gpa-wraps" => (FrontendRequest.SetMemTable, true),
            "a15-vring-num-index-255" => (FrontendRequest.SetVringNum, true),
            "a4-short-set-vring-num" => (FrontendRequest.SetVringNum, true),
            "c12-kick-is-directory" => (FrontendRequest.SetVringKick, true),
            "a3-size-ffffffff" => ((FrontendRequest)1, false),
            _ => (FrontendRequest.SetOwner, false),
        };

        await using (var fe = await RawFrontend.ConnectAsync(Front))
        {
            await NegotiateAsync(fe);
            int before = _backend.Count(hostile);
            using var memfd = FileDescriptor.CreateMemfd("vhostcompat-shield-test", 4096);
            using var dir = new FileDescriptor(Libc.Open(Path.GetTempPath(), 0x10000 | 0x80000));
            switch (name)
            {
                case "b9-short-memfd": // 1 MiB claimed over a 4 KiB file: DPDK and qsd map it and die of SIGBUS on the ring
                    (await fe.AckAsync(hostile, MemoryTablePayload.Encode([new MemoryRegionPayload(0, Mib, Uva, 0)]), [memfd.Value])).Should().NotBe(0UL);
                    break;
                case "b11-region-2^46":
                    (await fe.AckAsync(hostile, MemoryTablePayload.Encode([new MemoryRegionPayload(0, 1UL << 46, Uva, 0)]), [memfd.Value])).Should().NotBe(0UL);
                    break;
                case "b5-gpa-wraps":
                    (await fe.AckAsync(hostile, MemoryTablePayload.Encode([new MemoryRegionPayload(0xFFFF_FFFF_FFFF_F000, 0x2000, Uva, 0)]), [memfd.Value])).Should().NotBe(0UL);
                    break;
                case "a15-vring-num-index-255":
                    (await fe.AckAsync(hostile, new VringStatePayload(255, 64).Encode())).Should().NotBe(0UL);
                    break;
                case "a4-short-set-vring-num": // DPDK 22.11 and qsd 7.2 accept this and read 4 bytes that were never sent
                    (await fe.AckAsync(hostile, new byte[4])).Should().NotBe(0UL);
                    break;
                case "c12-kick-is-directory":
                    (await fe.AckAsync(hostile, U64Payload.Encode(0), [dir.Value])).Should().NotBe(0UL);
                    break;
                case "a3-size-ffffffff":
                    var frame = new byte[MessageHeader.Length + 16];
                    new MessageHeader(1, 0x9, 0xFFFF_FFFF).Write(frame);
                    fe.SendBytes(frame);
                    (await fe.IsClosedAsync(TimeSpan.FromSeconds(5))).Should().BeTrue("an unframeable message closes the frontend connection");
                    break;
                default: // the reply bit on a request: no way to answer it, so the session ends
                    fe.Send((uint)hostile, 0x5, []);
                    (await fe.IsClosedAsync(TimeSpan.FromSeconds(5))).Should().BeTrue();
                    break;
            }

            if (expectAck)
            {
                // Still in sync, and the request after the refused one is forwarded.
                fe.Send(FrontendRequest.GetFeatures, needReply: false);
                (await fe.ReceiveAsync())!.Value.Header.Request.Should().Be((uint)FrontendRequest.GetFeatures);
            }

            _backend.Count(hostile).Should().Be(before, $"the shield must keep {name} from the backend");
        }

        if (name != "a3-size-ffffffff") // a framing error ends the session before the shield sees a message
        {
            await WaitAsync(() => _proxy.RefusedRequests > 0, "the refusal counted once the session ended");
        }
        _run.IsCompleted.Should().BeFalse("the proxy outlives a hostile session");

        // The next, well-formed session is served end to end by the backend.
        await using (var fe = await ConnectRetryingAsync())
        {
            await NegotiateAsync(fe);
            using var ram = FileDescriptor.CreateMemfd("vhostcompat-shield-test", (long)Mib);
            (await fe.AckAsync(FrontendRequest.SetMemTable, MemoryTablePayload.Encode([new MemoryRegionPayload(0, Mib, Uva, 0)]), [ram.Value])).Should().Be(0UL);
            (await fe.AckAsync(FrontendRequest.SetVringNum, new VringStatePayload(0, 64).Encode())).Should().Be(0UL);
        }

        _backend.Count(FrontendRequest.SetMemTable).Should().BeGreaterThan(0);
        _backend.Count(FrontendRequest.SetVringNum).Should().BeGreaterThan(0);
    }

    private static async Task NegotiateAsync(RawFrontend fe)
    {
        fe.Send(FrontendRequest.GetFeatures, needReply: false);
        ulong features = BitConverter.ToUInt64((await fe.ReceiveAsync())!.Value.Payload);
        fe.Send(FrontendRequest.GetProtocolFeatures, needReply: false);
        ulong protocol = BitConverter.ToUInt64((await fe.ReceiveAsync())!.Value.Payload);
        (await fe.AckAsync(FrontendRequest.SetProtocolFeatures, U64Payload.Encode(protocol & (ulong)VhostUserProtocolFeatures.ReplyAck))).Should().Be(0UL);
        (await fe.AckAsync(FrontendRequest.SetOwner)).Should().Be(0UL);
        (await fe.AckAsync(FrontendRequest.SetFeatures, U64Payload.Encode(features))).Should().Be(0UL);
    }

    // The proxy re-creates its listener for every session, after reconnecting to (and re-checking) the backend.
    private async Task<RawFrontend> ConnectRetryingAsync()
    {
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (true)
        {
            try
            {
                return await RawFrontend.ConnectAsync(Front);
            }
            catch (SocketException) when (DateTime.UtcNow < deadline)
            {
                await Task.Delay(20);
            }
        }
    }

    private static async Task WaitAsync(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"timed out waiting for {what}");
            }

            await Task.Delay(10);
        }
    }

    /// <summary>
    /// A backend that only answers: GET_FEATURES (VERSION_1 | PROTOCOL_FEATURES), GET_PROTOCOL_FEATURES (REPLY_ACK | MQ),
    /// GET_QUEUE_NUM (1), an ack 0 for anything with NEED_REPLY; and counts every request it receives, per code.
    /// </summary>
    private sealed class ScriptedBackend : IAsyncDisposable
    {
        private readonly Socket _listener;
        private readonly CancellationTokenSource _stop = new();
        private readonly ConcurrentDictionary<uint, int> _received = new();
        private readonly Task _accept;

        public ScriptedBackend(string path)
        {
            Path = path;
            _listener = UnixListener.Listen(path, NullLogger.Instance, backlog: 4);
            _accept = Task.Run(AcceptAsync);
        }

        public string Path { get; }

        public int Count(FrontendRequest request) => _received.GetValueOrDefault((uint)request);

        private async Task AcceptAsync()
        {
            while (!_stop.IsCancellationRequested)
            {
                Socket s;
                try
                {
                    s = await _listener.AcceptAsync(_stop.Token);
                }
                catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
                {
                    return;
                }

                _ = Task.Run(() => ServeAsync(s));
            }
        }

        private async Task ServeAsync(Socket s)
        {
            await using var c = new VhostUserConnection(s, TimeSpan.FromSeconds(5));
            try
            {
                while (await c.ReceiveAsync(_stop.Token) is { } m)
                {
                    using (m)
                    {
                        _received.AddOrUpdate(m.Header.Request, 1, (_, n) => n + 1);
                        ulong? answer = (FrontendRequest)m.Header.Request switch
                        {
                            FrontendRequest.GetFeatures => VirtioFeatureBits.Version1 | VirtioFeatureBits.ProtocolFeatures,
                            FrontendRequest.GetProtocolFeatures => (ulong)(VhostUserProtocolFeatures.ReplyAck | VhostUserProtocolFeatures.Mq),
                            FrontendRequest.GetQueueNum => 1,
                            _ when m.Header.NeedReply => 0,
                            _ => null,
                        };
                        if (answer is { } v)
                        {
                            c.Send(m.Header.Request, MessageHeader.ReplyFlags, U64Payload.Encode(v));
                        }
                    }
                }
            }
            catch (Exception ex) when (ex is OperationCanceledException or VhostUserFramingException or IOException or SocketException)
            {
                // The proxy closed its end.
            }
        }

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            _listener.Dispose();
            await _accept;
        }
    }
}
