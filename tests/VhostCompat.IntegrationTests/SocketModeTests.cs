using System.Net.Sockets;
using VhostCompat.Backend;
using VhostCompat.Frontend;
using VhostCompat.IntegrationTests.Support;
using VhostCompat.Interop;
using Microsoft.Extensions.Logging.Abstractions;

namespace VhostCompat.IntegrationTests;

public sealed class SocketModeTests
{
    [Fact]
    public async Task Server_mode_serves_the_next_frontend_on_the_same_socket_after_one_leaves()
    {
        await using var fx = new BackendFixture();
        await fx.WaitListeningAsync();
        for (int i = 0; i < 3; i++)
        {
            await using var fe = await VhostUserFrontend.ConnectAsync(fx.SocketPath);
            (await fe.GetFeaturesAsync()).Should().Be(fx.Backend.OfferedFeatures);
        }

        await fx.WaitSessionsEndedAsync(3);
        fx.Device.Disconnects.Should().Be(3);
    }

    [Fact]
    public async Task Server_mode_replaces_a_stale_socket_file_but_refuses_a_live_one()
    {
        string dir = Directory.CreateTempSubdirectory("vhostcompat-stale-").FullName;
        string path = Path.Combine(dir, "s.sock");
        // A leftover file nobody listens on (.NET unlinks its own socket files on close, so a plain file stands in).
        await File.WriteAllTextAsync(path, string.Empty);

        await using var fx = new BackendFixture(configure: o => o.SocketPath = path);
        await fx.WaitListeningAsync();
        await using (var fe = await VhostUserFrontend.ConnectAsync(path))
        {
            (await fe.GetFeaturesAsync()).Should().Be(fx.Backend.OfferedFeatures);
        }

        fx.Logs.Text.Should().Contain("Removed stale socket file");
        var second = new VhostUserBackend(new TestDevice(), new VhostUserBackendOptions { SocketPath = path });
        Func<Task> run = () => second.RunAsync(CancellationToken.None);
        await run.Should().ThrowAsync<IOException>().WithMessage("*served by another live process*");
    }

    [Fact]
    public async Task Client_mode_connects_with_backoff_and_reconnects_after_the_frontend_goes_away()
    {
        string dir = Directory.CreateTempSubdirectory("vhostcompat-client-").FullName;
        string path = Path.Combine(dir, "fe.sock");
        await using var fx = new BackendFixture(configure: o =>
        {
            o.SocketPath = path;
            o.Mode = VhostUserSocketMode.Client;
            o.ReconnectInitialDelay = TimeSpan.FromMilliseconds(20);
            o.ReconnectMaxDelay = TimeSpan.FromMilliseconds(200);
        });

        await Task.Delay(300); // the backend retries while nobody listens
        fx.Logs.Text.Should().Contain("retrying in");
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(path));
        listener.Listen(1);
        for (int i = 0; i < 2; i++)
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            Socket accepted = await listener.AcceptAsync(cts.Token);
            await using var fe = VhostUserFrontend.FromConnectedSocket(accepted);
            (await fe.GetFeaturesAsync()).Should().Be(fx.Backend.OfferedFeatures);
        }
    }

    [Fact]
    public async Task Inherited_connected_fd_serves_one_session()
    {
        var (mine, theirs) = Libc.SocketPair();
        var device = new TestDevice();
        var backend = new VhostUserBackend(device, new VhostUserBackendOptions { InheritedFd = theirs }, NullLoggerFactory.Instance);
        Task run = backend.RunAsync(CancellationToken.None);
        await using (var fe = VhostUserFrontend.FromConnectedSocket(new Socket(new SafeSocketHandle(mine, ownsHandle: true))))
        {
            (await fe.GetFeaturesAsync()).Should().Be(backend.OfferedFeatures);
        }

        await run.WaitAsync(TimeSpan.FromSeconds(5));
        device.Disconnects.Should().Be(1);
    }

    [Fact]
    public void Options_are_validated_with_the_name_of_the_bad_setting()
    {
        var act = () => new VhostUserBackend(new TestDevice(), new VhostUserBackendOptions());
        act.Should().Throw<ArgumentException>().WithMessage("*SocketPath*");
        act = () => new VhostUserBackend(new TestDevice(), new VhostUserBackendOptions { SocketPath = "/x", MaxMemorySlots = 0 });
        act.Should().Throw<ArgumentException>().WithMessage("*MaxMemorySlots*");
    }
}
