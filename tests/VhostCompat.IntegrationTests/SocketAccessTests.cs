using System.Diagnostics;
using VhostCompat.Backend;
using VhostCompat.IntegrationTests.Support;
using VhostCompat.Proxy;

namespace VhostCompat.IntegrationTests;

/// <summary>
/// The listening socket's mode and group (VhostUserBackendOptions.SocketMode/SocketGroup, the proxy's options of the same
/// names, the runner's --socket-mode/--socket-group): libvirt runs QEMU as libvirt-qemu, which cannot connect to a
/// socket root created with mode 0755.
/// </summary>
public sealed class SocketAccessTests
{
    private const UnixFileMode Mode0660 = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite;

    [Fact]
    public async Task The_backend_socket_gets_the_mode_and_group_asked_for()
    {
        await using var fx = new BackendFixture(new TestDevice(), o => { o.SocketMode = Mode0660; o.SocketGroup = "12345"; });
        await fx.WaitListeningAsync();
        Stat(fx.SocketPath).Should().Be("660 12345");
    }

    [Fact]
    public async Task The_proxy_frontend_socket_gets_the_mode_and_group_asked_for()
    {
        await using var backend = new BackendFixture(new TestDevice());
        await backend.WaitListeningAsync();
        string listen = Path.Combine(backend.Directory, "proxy.sock");
        var proxy = new VhostUserProxy(new VhostUserProxyOptions { ListenPath = listen, BackendPath = backend.SocketPath, SocketMode = Mode0660, SocketGroup = "4242" });
        using var stop = new CancellationTokenSource();
        var run = Task.Run(() => proxy.RunAsync(stop.Token));
        for (int i = 0; i < 1000 && !File.Exists(listen); i++)
        {
            await Task.Delay(10);
        }

        Stat(listen).Should().Be("660 4242");
        await stop.CancelAsync();
        await run.WaitAsync(TimeSpan.FromSeconds(20));
    }

    [Fact]
    public void An_unknown_group_or_a_bad_mode_is_refused_when_the_options_are_checked()
    {
        var unknown = () => new VhostUserBackend(new TestDevice(), new VhostUserBackendOptions { SocketPath = "/tmp/x.sock", SocketGroup = "no-such-group-vhc" });
        unknown.Should().Throw<ArgumentException>().WithMessage("*no-such-group-vhc*/etc/group*");
        var badMode = () => new VhostUserProxy(new VhostUserProxyOptions { ListenPath = "/tmp/a.sock", BackendPath = "/tmp/b.sock", SocketMode = (UnixFileMode)0x3FF });
        badMode.Should().Throw<ArgumentException>().WithMessage("*beyond 0777*");
    }

    private static string Stat(string path)
    {
        using var p = Process.Start(new ProcessStartInfo("stat", ["-c", "%a %g", path]) { RedirectStandardOutput = true })!;
        string text = p.StandardOutput.ReadToEnd().Trim();
        p.WaitForExit();
        return text;
    }
}
