using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using VhostCompat.Frontend;
using VhostCompat.IntegrationTests.Support;
using VhostCompat.Protocol;

namespace VhostCompat.IntegrationTests;

public sealed class MetricsTests
{
    [Fact]
    public async Task Connections_negotiations_refusals_and_per_queue_traffic_are_published_on_the_VhostCompat_meter()
    {
        var totals = new ConcurrentDictionary<string, long>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == "VhostCompat")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            if (instrument.Name.StartsWith("vhostcompat.queue.", StringComparison.Ordinal))
            {
                totals[instrument.Name] = value; // observable: the current cumulative value
            }
            else
            {
                totals.AddOrUpdate(instrument.Name, value, (_, v) => v + value);
            }
        });
        listener.Start();

        await using var fx = new BackendFixture();
        await fx.WaitListeningAsync();
        await using var fe = await VhostUserFrontend.ConnectAsync(fx.SocketPath);
        await fe.NegotiateAsync(ulong.MaxValue, (VhostUserProtocolFeatures)ulong.MaxValue);
        Func<Task> refused = () => fe.SetVringNumAsync(0, 3);
        await refused.Should().ThrowAsync<VhostUserRequestException>();
        using var mem = new GuestMemory(0, 4 << 20);
        await fe.SetMemTableAsync([mem]);
        var ring = new SplitRingDriver(mem, 0, 64);
        using var kick = new EventNotifier();
        using var call = new EventNotifier();
        await ring.ConfigureAsync(fe, 0, kick, call);
        ring.AddRequest("12345"u8, 16);
        kick.Signal();
        await ring.WaitUsedAsync(1);
        listener.RecordObservableInstruments();

        totals.GetValueOrDefault("vhostcompat.connections").Should().BeGreaterThanOrEqualTo(1);
        totals.GetValueOrDefault("vhostcompat.negotiations").Should().BeGreaterThanOrEqualTo(1);
        totals.GetValueOrDefault("vhostcompat.requests.refused").Should().BeGreaterThanOrEqualTo(1);
        totals.GetValueOrDefault("vhostcompat.queue.chains").Should().Be(1);
        totals.GetValueOrDefault("vhostcompat.queue.bytes").Should().Be(10, "5 bytes read and 5 written back");
    }
}
