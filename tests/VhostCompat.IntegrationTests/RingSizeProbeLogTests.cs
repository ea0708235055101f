using Microsoft.Extensions.Logging;
using VhostCompat.Backend;
using VhostCompat.Frontend;
using VhostCompat.IntegrationTests.Support;
using VhostCompat.Protocol;

namespace VhostCompat.IntegrationTests;

/// <summary>
/// The tool's probe searches for the largest ring with SET_VRING_NUM 32768, 16384, ...: the refusals above the
/// device's maximum are logged at Information once per connection and then at Debug, never as warnings.
/// </summary>
public sealed class RingSizeProbeLogTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vhostcompat-ring-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task Over_limit_ring_sizes_are_refused_without_a_warning_per_try()
    {
        var logs = new ListLoggerProvider();
        using var loggerFactory = LoggerFactory.Create(b => b.SetMinimumLevel(LogLevel.Trace).AddProvider(logs));
        string socket = Path.Combine(_dir, "be.sock");
        var backend = new VhostUserBackend(new TestDevice(), new VhostUserBackendOptions { SocketPath = socket }, loggerFactory);
        using var stop = new CancellationTokenSource();
        Task run = backend.RunAsync(stop.Token);
        await using (var fe = await VhostUserFrontend.ConnectAsync(socket))
        {
            await fe.NegotiateAsync(ulong.MaxValue, VhostUserProtocolFeatures.ReplyAck);
            foreach (int size in new[] { 32768, 16384, 8192, 4096, 2048, 1024, 512 })
            {
                var refused = () => fe.SetVringNumAsync(0, size);
                await refused.Should().ThrowAsync<VhostUserRequestException>();
            }

            await fe.SetVringNumAsync(0, 256); // TestDevice.MaxQueueSize
            var zero = () => fe.SetVringNumAsync(0, 0);
            await zero.Should().ThrowAsync<VhostUserRequestException>();
        }

        await stop.CancelAsync();
        await run.WaitAsync(TimeSpan.FromSeconds(10));
        var refusals = logs.Lines.Where(l => l.Contains("Refused request SET_VRING_NUM", StringComparison.Ordinal)).ToList();
        refusals.Should().HaveCount(8);
        refusals.Count(l => l.StartsWith("Information:", StringComparison.Ordinal)).Should().Be(1, "the first over-limit size of the connection");
        refusals.Count(l => l.StartsWith("Debug:", StringComparison.Ordinal)).Should().Be(6);
        refusals.Single(l => l.StartsWith("Warning:", StringComparison.Ordinal)).Should().Contain("ring size 0", "a size of 0 is not a size search: still a warning");
    }
}
