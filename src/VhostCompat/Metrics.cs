using System.Collections.Concurrent;
using System.Diagnostics.Metrics;

namespace VhostCompat;

/// <summary>
/// System.Diagnostics.Metrics instruments of the SDK (meter <c>VhostCompat</c>), readable with
/// <c>dotnet-counters monitor --counters VhostCompat</c> or OpenTelemetry. Per-queue counts are
/// observable instruments read from the live queues, so the data path pays nothing per packet.
/// </summary>
internal static class Metrics
{
    public const string MeterName = "VhostCompat";

    private static readonly Meter Meter = new(MeterName, typeof(Metrics).Assembly.GetName().Version?.ToString());
    private static readonly ConcurrentDictionary<object, LiveQueue> LiveQueues = new();

    public static readonly Counter<long> Connections = Meter.CreateCounter<long>("vhostcompat.connections", "{connection}", "Frontend connections accepted or established");

    public static readonly Counter<long> Negotiations = Meter.CreateCounter<long>("vhostcompat.negotiations", "{negotiation}", "Feature sets acked by a frontend (SET_FEATURES accepted)");

    public static readonly Counter<long> RefusedRequests = Meter.CreateCounter<long>("vhostcompat.requests.refused", "{request}", "Front-end requests refused (invalid, not negotiated, or unknown)");

    public static readonly Counter<long> ProxyShieldRefusals = Meter.CreateCounter<long>("vhostcompat.proxy.shield.refused", "{request}", "Frontend requests the proxy's shield kept from the backend");

    public static readonly Counter<long> ProxyBackendRefusals = Meter.CreateCounter<long>("vhostcompat.proxy.backend.refused", "{check}", "Backends the proxy refused (cannot serve the pinned profile or honour the acked-state record)");

    public static readonly Counter<long> BrokenQueues = Meter.CreateCounter<long>("vhostcompat.queues.broken", "{queue}", "Queues stopped because the guest violated the ring rules");

    static Metrics()
    {
        Meter.CreateObservableCounter("vhostcompat.queue.chains", ObserveChains, "{chain}", "Descriptor chains completed per queue (packets for net, requests for block)");
        Meter.CreateObservableCounter("vhostcompat.queue.bytes", ObserveBytes, "By", "Bytes moved per queue (read from and written to guest buffers)");
    }

    /// <summary>Starts observing a running queue (<paramref name="queue"/> is the key for <see cref="Untrack"/>).</summary>
    public static void Track(object queue, int index, Func<long> chains, Func<long> bytes, string device, string endpoint) =>
        LiveQueues[queue] = new LiveQueue(chains, bytes, [new("vhostcompat.device", device), new("vhostcompat.endpoint", endpoint), new("vhostcompat.queue", index)]);

    public static void Untrack(object queue) => LiveQueues.TryRemove(queue, out _);

    private static IEnumerable<Measurement<long>> ObserveChains() =>
        LiveQueues.Select(q => new Measurement<long>(q.Value.Chains(), q.Value.Tags));

    private static IEnumerable<Measurement<long>> ObserveBytes() =>
        LiveQueues.Select(q => new Measurement<long>(q.Value.Bytes(), q.Value.Tags));

    /// <summary>How a live queue's counters are read (the queue types stay out of this shared file).</summary>
    private sealed record LiveQueue(Func<long> Chains, Func<long> Bytes, KeyValuePair<string, object?>[] Tags);
}
