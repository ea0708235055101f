using System.Net.Sockets;
using VhostCompat.Backend;
using VhostCompat.Frontend;
using VhostCompat.IntegrationTests.Support;
using VhostCompat.Protocol;
using VhostCompat.Proxy;
using VhostCompat.Virtio;

namespace VhostCompat.IntegrationTests;

/// <summary>
/// The reversed connection directions: the frontend listening (QEMU <c>server=on</c>) and the backend connecting
/// (DPDK <c>client=1</c>), over several sessions: the proxy outlives each one and shuts down on cancellation.
/// </summary>
public sealed class ProxyDirectionTests
{
    [Fact]
    public async Task With_a_listening_frontend_and_a_connecting_backend_the_proxy_serves_session_after_session()
    {
        string dir = Directory.CreateTempSubdirectory("vhostcompat-proxy-dir-").FullName;
        string frontendPath = Path.Combine(dir, "qemu.sock");
        string backendPath = Path.Combine(dir, "backend-in.sock");
        using var frontendListener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        frontendListener.Bind(new UnixDomainSocketEndPoint(frontendPath));
        frontendListener.Listen(1);

        var proxy = new VhostUserProxy(new VhostUserProxyOptions
        {
            FrontendPath = frontendPath,
            BackendListenPath = backendPath,
            ReconnectMaxDelay = TimeSpan.FromMilliseconds(200),
        });
        using var stop = new CancellationTokenSource();
        var run = Task.Run(() => proxy.RunAsync(stop.Token));
        for (int i = 0; i < 500 && !File.Exists(backendPath); i++)
        {
            await Task.Delay(10);
        }

        // The SDK backend as a client with reconnect, like DPDK's vhost PMD with client=1.
        await using var backend = new BackendFixture(new TestDevice(), o =>
        {
            o.SocketPath = backendPath;
            o.Mode = VhostUserSocketMode.Client;
            o.ReconnectMaxDelay = TimeSpan.FromMilliseconds(200);
        });

        for (int session = 1; session <= 3; session++)
        {
            using var accepted = await frontendListener.AcceptAsync().WaitAsync(TimeSpan.FromSeconds(20));
            await using var fe = VhostUserFrontend.FromConnectedSocket(accepted);
            ulong acked = await fe.NegotiateAsync(VirtioFeatureBits.Version1, (VhostUserProtocolFeatures)ulong.MaxValue);
            (acked & VirtioFeatureBits.Version1).Should().Be(VirtioFeatureBits.Version1);
            await fe.SetVringNumAsync(0, 64);
            backend.Device.AckedFeatures.Should().HaveCount(session, "each session's SET_FEATURES reached the backend");
            proxy.Sessions.Should().Be(session);
            proxy.State.Should().Be(VhostUserProxyState.Serving);
            await fe.DisposeAsync();
            // The proxy closes the backend connection with the frontend's; the client backend reconnects for the next one.
            await backend.WaitSessionsEndedAsync(session, TimeSpan.FromSeconds(20));
        }

        await stop.CancelAsync();
        await run.WaitAsync(TimeSpan.FromSeconds(20));
        proxy.State.Should().Be(VhostUserProxyState.Stopped);
        File.Exists(backendPath).Should().BeFalse("the proxy removes the socket it listened on when it stops");
        Directory.Delete(dir, recursive: true);
    }
}
