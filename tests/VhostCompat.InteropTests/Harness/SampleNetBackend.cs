using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace VhostCompat.InteropTests.Harness;

/// <summary>What a backend reports with --print-capabilities.</summary>
public sealed record BackendCapabilities(string Type, ulong VirtioFeatures, ulong ProtocolFeatures, string Json)
{
    /// <summary>Parses {"type":"net","features":[],"vhostcompat":{"virtio-features":"0x..","protocol-features":"0x.."}}.</summary>
    public static BackendCapabilities Parse(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        using var doc = JsonDocument.Parse(json);
        var root = doc.RootElement;
        var vc = root.GetProperty("vhostcompat");
        return new BackendCapabilities(
            root.TryGetProperty("type", out var t) ? t.GetString() ?? string.Empty : string.Empty,
            VirtioNetFeatures.ParseHex(vc.GetProperty("virtio-features").GetString() ?? throw new FormatException("virtio-features is null")),
            VirtioNetFeatures.ParseHex(vc.GetProperty("protocol-features").GetString() ?? throw new FormatException("protocol-features is null")),
            json.Trim());
    }
}

/// <summary>One port's counters as the switch prints them on exit: "port N: tx_packets=.. tx_bytes=.. rx_packets=.. rx_dropped=..".</summary>
/// <remarks>tx = frames the frontend on this port sent into the switch, rx = frames the switch delivered to it.</remarks>
public sealed record SwitchPortCounters(int Port, long TxPackets, long TxBytes, long RxPackets, long RxDropped)
{
    private static readonly Regex Line = new(
        @"^port (?<port>\d+): tx_packets=(?<txp>\d+) tx_bytes=(?<txb>\d+) rx_packets=(?<rxp>\d+) rx_dropped=(?<rxd>\d+)\s*$",
        RegexOptions.CultureInvariant | RegexOptions.Multiline);

    /// <summary>Every counter line in <paramref name="log"/>, by port (the last line of a port wins).</summary>
    public static IReadOnlyDictionary<int, SwitchPortCounters> ParseAll(string log)
    {
        ArgumentNullException.ThrowIfNull(log);
        var result = new SortedDictionary<int, SwitchPortCounters>();
        foreach (Match m in Line.Matches(log.Replace("\r", string.Empty, StringComparison.Ordinal)))
        {
            var c = new SwitchPortCounters(
                int.Parse(m.Groups["port"].Value, CultureInfo.InvariantCulture),
                long.Parse(m.Groups["txp"].Value, CultureInfo.InvariantCulture),
                long.Parse(m.Groups["txb"].Value, CultureInfo.InvariantCulture),
                long.Parse(m.Groups["rxp"].Value, CultureInfo.InvariantCulture),
                long.Parse(m.Groups["rxd"].Value, CultureInfo.InvariantCulture));
            result[c.Port] = c;
        }

        return result;
    }

    public override string ToString() =>
        $"port {Port}: tx_packets={TxPackets} tx_bytes={TxBytes} rx_packets={RxPackets} rx_dropped={RxDropped}";
}

/// <summary>
/// The sample vhost-user net backend (samples/Net) run as <c>dotnet VhostCompat.Samples.Net.dll --socket-path SOCK</c>:
/// it listens, QEMU connects. Its Microsoft.Extensions.Logging console output (stdout) is the log that is checked.
/// With several --socket-path options it is an L2 learning switch with one port per socket (port 0 = first path).
/// </summary>
public sealed class SampleNetBackend : IAsyncDisposable
{
    // Simple console format, optionally after a timestamp (colour codes removed first): "06:33:12.123 fail: Category[0] ...".
    private static readonly Regex ErrorStart = new(@"^(?:[0-9:.T+\-/]+ ){0,2}(?:fail|crit):", RegexOptions.CultureInvariant);
    private static readonly Regex AnsiEscape = new(@"\x1b\[[0-9;]*m", RegexOptions.CultureInvariant);

    private SampleNetBackend(ExternalProcess process, IReadOnlyList<string> socketPaths)
    {
        Process = process;
        SocketPaths = socketPaths;
    }

    public ExternalProcess Process { get; }

    /// <summary>The first (port 0) socket.</summary>
    public string SocketPath => SocketPaths[0];

    /// <summary>One socket per switch port, in port order.</summary>
    public IReadOnlyList<string> SocketPaths { get; }

    public string LogPath => Process.StdoutPath;

    public static string DllPath => RepositoryLayout.SampleDll("Net", "VhostCompat.Samples.Net");

    public static Task<BackendCapabilities> GetCapabilitiesAsync(InteropRun run) =>
        SampleProcess.GetCapabilitiesAsync(run, "backend-capabilities", DllPath);

    /// <summary>Starts the backend and waits until it has created its listening socket.</summary>
    public static Task<SampleNetBackend> StartAsync(InteropRun run, string socketPath, IEnumerable<string>? extraArguments = null, string name = "backend", TimeSpan? timeout = null) =>
        StartAsync(run, [socketPath], extraArguments, name, timeout);

    /// <summary>Starts the backend as a switch with one port per socket and waits until it listens on all of them.</summary>
    public static async Task<SampleNetBackend> StartAsync(InteropRun run, IReadOnlyList<string> socketPaths, IEnumerable<string>? extraArguments = null, string name = "backend", TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(run);
        ArgumentNullException.ThrowIfNull(socketPaths);
        if (socketPaths.Count == 0)
        {
            throw new ArgumentException("at least one socket path is needed", nameof(socketPaths));
        }

        var args = new List<string> { DllPath };
        foreach (var socketPath in socketPaths)
        {
            File.Delete(socketPath);
            args.Add("--socket-path");
            args.Add(socketPath);
        }

        args.AddRange(extraArguments ?? []);
        var process = SampleProcess.Start(run, name, args, timeout, "backend");
        var backend = new SampleNetBackend(process, socketPaths.ToList());
        foreach (var socketPath in socketPaths)
        {
            await SampleProcess.WaitUntilListeningAsync(run, process, backend, socketPath, "backend").ConfigureAwait(false);
        }

        return backend;
    }

    /// <summary>True for a Microsoft.Extensions.Logging simple-console entry of level Error ("fail:") or Critical ("crit:").</summary>
    public static bool IsErrorLine(string line) => ErrorStart.IsMatch(AnsiEscape.Replace(line, string.Empty));

    /// <summary>"fail:"/"crit:" entries with their indented message lines.</summary>
    public IReadOnlyList<string> ErrorEntries() => SampleProcess.ErrorEntries(LogFile.ReadLines(LogPath));

    /// <summary>Value of the last "acked virtio features 0x..." log line (the frontend's SET_FEATURES), if any.</summary>
    public ulong? LastAckedFeatures() => SampleProcess.LastAckedFeatures(LogPath);

    public Task<ulong?> WaitForAckedFeaturesAsync(TimeSpan timeout) => SampleProcess.WaitForAckedFeaturesAsync(LogPath, timeout, Process);

    /// <summary>vhost-user requests in the order logged ("request GET_FEATURES" -> GET_FEATURES).</summary>
    public IReadOnlyList<string> Requests() => SampleProcess.Requests(LogPath);

    /// <summary>The request sequence with consecutive repeats collapsed ("SET_VRING_ENABLE x10").</summary>
    public string RequestSequence() => Collapse(Requests());

    /// <summary>"A A A B" -> "A x3 B".</summary>
    public static string Collapse(IReadOnlyList<string> items)
    {
        ArgumentNullException.ThrowIfNull(items);
        var parts = new List<string>();
        for (var i = 0; i < items.Count;)
        {
            var j = i;
            while (j < items.Count && items[j] == items[i])
            {
                j++;
            }

            parts.Add(j - i > 1 ? $"{items[i]} x{j - i}" : items[i]);
            i = j;
        }

        return string.Join(' ', parts);
    }

    /// <summary>Per-port counters the switch printed on exit (empty while it runs or when it did not exit cleanly).</summary>
    public IReadOnlyDictionary<int, SwitchPortCounters> PortCounters() => SwitchPortCounters.ParseAll(LogFile.ReadAll(LogPath));

    /// <summary>Graceful stop (SIGTERM), then kill by PID.</summary>
    public Task StopAsync() => Process.StopAsync(TimeSpan.FromSeconds(10));

    public ValueTask DisposeAsync() => Process.DisposeAsync();
}
