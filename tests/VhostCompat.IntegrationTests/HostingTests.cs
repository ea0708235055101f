using System.Diagnostics;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using VhostCompat.Backend;
using VhostCompat.Frontend;
using VhostCompat.IntegrationTests.Support;
using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.IntegrationTests;

/// <summary>VhostCompat.Hosting: AddVhostUserBackend on a real generic host, with the C# frontend over real sockets.</summary>
public sealed class HostingTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vhostcompat-host-").FullName;
    private readonly ListLoggerProvider _logs = new();

    public void Dispose()
    {
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private HostApplicationBuilder NewBuilder()
    {
        // No appsettings, environment or console logging: only what the test sets.
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true, ContentRootPath = _dir });
        builder.Logging.SetMinimumLevel(LogLevel.Trace).AddProvider(_logs);
        return builder;
    }

    private static CancellationToken Within(int seconds) => new CancellationTokenSource(TimeSpan.FromSeconds(seconds)).Token;

    private IEnumerable<string> Errors() => _logs.Lines.Where(l => l.StartsWith("Error:", StringComparison.Ordinal) || l.StartsWith("Critical:", StringComparison.Ordinal));

    [Fact]
    public async Task Host_starts_the_backend_a_frontend_negotiates_and_the_host_stops_cleanly()
    {
        string socket = Path.Combine(_dir, "be.sock");
        var device = new TestDevice();
        var builder = NewBuilder();
        builder.Services.AddSingleton(device); // the application's own instance is the one served
        builder.Services.AddVhostUserBackend<TestDevice>(o =>
        {
            o.SocketPath = socket;
            o.Workers = 2;
        });
        using IHost host = builder.Build();

        await host.StartAsync(Within(10));
        File.Exists(socket).Should().BeTrue("the backend listens once StartAsync has returned");
        _logs.Text.Should().Contain("Listening for a vhost-user frontend on " + socket, "the backend logs through the host's ILoggerFactory");

        await using (var fe = await VhostUserFrontend.ConnectAsync(socket))
        {
            const ulong wanted = VirtioFeatureBits.Version1 | VirtioFeatureBits.EventIdx | VirtioFeatureBits.IndirectDesc;
            ulong acked = await fe.NegotiateAsync(wanted, (VhostUserProtocolFeatures)ulong.MaxValue);
            acked.Should().Be(wanted | VirtioFeatureBits.ProtocolFeatures);
            (await fe.GetQueueNumAsync()).Should().Be(2UL);
            device.AckedFeatures.Should().ContainSingle().Which.Should().Be(wanted, "the device sees the virtio bits without the vhost-only PROTOCOL_FEATURES bit");

            // Stop with the frontend still connected: the session is cancelled, the socket closed and removed.
            var sw = Stopwatch.StartNew();
            Func<Task> stop = () => host.StopAsync(Within(20));
            await stop.Should().NotThrowAsync();
            sw.Elapsed.Should().BeLessThan(TimeSpan.FromSeconds(5));
        }

        File.Exists(socket).Should().BeFalse("the listening socket file is removed on stop");
        device.Disconnects.Should().Be(1);
        _logs.Text.Should().Contain("vhost-user backend (default) stopped");
        Errors().Should().BeEmpty();
    }

    [Theory]
    [InlineData("no-socket", "SocketPath")]
    [InlineData("workers", "Workers")]
    [InlineData("slots", "MaxMemorySlots")]
    [InlineData("fd", "InheritedFd")]
    public async Task Invalid_options_fail_the_host_start_naming_the_option(string @case, string option)
    {
        string socket = Path.Combine(_dir, "bad.sock");
        var builder = NewBuilder();
        builder.Services.AddVhostUserBackend<TestDevice>(o =>
        {
            o.SocketPath = socket;
            switch (@case)
            {
                case "no-socket": o.SocketPath = null; break;
                case "workers": o.Workers = 0; break;
                case "slots": o.MaxMemorySlots = 600; break;
                case "fd": o.InheritedFd = -3; break;
            }
        });
        using IHost host = builder.Build();

        Func<Task> start = () => host.StartAsync(Within(10));
        (await start.Should().ThrowAsync<OptionsValidationException>())
            .Which.Message.Should().Contain("VhostUserBackendOptions." + option);
        File.Exists(socket).Should().BeFalse("nothing listens when the options are invalid");
        _logs.Text.Should().NotContain("Listening for a vhost-user frontend");
    }

    [Fact]
    public async Task Named_backends_run_side_by_side_each_with_its_own_device()
    {
        string a = Path.Combine(_dir, "a.sock"), b = Path.Combine(_dir, "b.sock");
        var builder = NewBuilder();
        var shared = new VhostUserWorkerPool(1);
        builder.Services.AddVhostUserBackend<TestDevice>("a", o => { o.SocketPath = a; o.WorkerPool = shared; });
        builder.Services.AddVhostUserBackend<TestDevice>("b", o => { o.SocketPath = b; o.WorkerPool = shared; });
        Action again = () => builder.Services.AddVhostUserBackend<TestDevice>("b", o => o.SocketPath = a);
        again.Should().Throw<InvalidOperationException>().WithMessage("*'b' was already added*");
        using IHost host = builder.Build();
        using (shared)
        {
            await host.StartAsync(Within(10));
            foreach (string path in new[] { a, b })
            {
                await using var fe = await VhostUserFrontend.ConnectAsync(path);
                await fe.NegotiateAsync(VirtioFeatureBits.Version1, (VhostUserProtocolFeatures)ulong.MaxValue);
            }

            var deviceA = host.Services.GetRequiredKeyedService<TestDevice>("a");
            var deviceB = host.Services.GetRequiredKeyedService<TestDevice>("b");
            deviceA.Should().NotBeSameAs(deviceB);
            await WaitUntilAsync(() => deviceA.Disconnects == 1 && deviceB.Disconnects == 1);
            await host.StopAsync(Within(20));
        }

        File.Exists(a).Should().BeFalse();
        File.Exists(b).Should().BeFalse();
        _logs.Text.Should().Contain("vhost-user backend a stopped").And.Contain("vhost-user backend b stopped");
        Errors().Should().BeEmpty();
    }

    [Fact]
    public async Task A_socket_served_by_a_live_backend_fails_the_start()
    {
        await using var live = new BackendFixture();
        await live.WaitListeningAsync();
        var builder = NewBuilder();
        builder.Services.AddVhostUserBackend<TestDevice>(o => o.SocketPath = live.SocketPath);
        using IHost host = builder.Build();

        Func<Task> start = () => host.StartAsync(Within(10));
        await start.Should().ThrowAsync<IOException>().WithMessage("*served by another live process*");
        File.Exists(live.SocketPath).Should().BeTrue("the live backend's socket is left alone");
        await using var fe = await VhostUserFrontend.ConnectAsync(live.SocketPath);
        (await fe.GetFeaturesAsync()).Should().Be(live.Backend.OfferedFeatures);
    }

    private static async Task WaitUntilAsync(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (!condition())
        {
            DateTime.UtcNow.Should().BeBefore(deadline, "the condition should hold within 10 s");
            await Task.Delay(10);
        }
    }
}
