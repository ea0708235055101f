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
    private static readonly Regex AckedFeatures = new(@"acked virtio features 0x(?<hex>[0-9a-fA-F]+)", RegexOptions.CultureInvariant);
    private static readonly Regex Request = new(@"\brequest (?<name>[A-Z][A-Z0-9_]+)", RegexOptions.CultureInvariant);

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

    public static async Task<BackendCapabilities> GetCapabilitiesAsync(InteropRun run)
    {
        ArgumentNullException.ThrowIfNull(run);
        await using var p = ExternalProcess.Start(new ExternalProcessOptions(
            "backend-capabilities", RepositoryLayout.DotnetHost, [DllPath, "--print-capabilities"], run.Directory, TimeSpan.FromSeconds(60)));
        var exited = await p.WaitForExitAsync(TimeSpan.FromSeconds(60)).ConfigureAwait(false);
        var stdout = p.ReadStdout();
        if (!exited || p.ExitCode != 0)
        {
            throw new InvalidOperationException(
                $"'{p.CommandLine}' failed (exit {p.ExitCode?.ToString(CultureInfo.InvariantCulture) ?? "none, timed out"}):\n{stdout}\n{p.ReadStderr()}");
        }

        try
        {
            return BackendCapabilities.Parse(stdout);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or FormatException or InvalidOperationException or OverflowException)
        {
            throw new InvalidOperationException($"'{p.CommandLine}' printed no valid capabilities JSON ({e.Message}):\n{stdout}", e);
        }
    }

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
        var process = ExternalProcess.Start(new ExternalProcessOptions(name, RepositoryLayout.DotnetHost, args, run.Directory, timeout ?? TimeSpan.FromMinutes(6))
        {
            Environment = { ["DOTNET_NOLOGO"] = "1", ["NO_COLOR"] = "1" },
        });
        run.AddArtifact($"backend log ({name}, pid {process.Pid}, stdout)", process.StdoutPath);
        run.AddArtifact($"backend stderr ({name})", process.StderrPath);
        var backend = new SampleNetBackend(process, socketPaths.ToList());
        foreach (var socketPath in socketPaths)
        {
            if (!await LogFile.WaitForPathAsync(socketPath, TimeSpan.FromSeconds(30), process).ConfigureAwait(false))
            {
                var why = process.HasExited ? $"exited with {process.ExitCode}" : "still running";
                await backend.DisposeAsync().ConfigureAwait(false);
                throw new InvalidOperationException($"backend did not create {socketPath} within 30 s ({why}): {process.CommandLine}{run.Diagnostics()}");
            }
        }

        return backend;
    }

    /// <summary>True for a Microsoft.Extensions.Logging simple-console entry of level Error ("fail:") or Critical ("crit:").</summary>
    public static bool IsErrorLine(string line) => ErrorStart.IsMatch(AnsiEscape.Replace(line, string.Empty));

    /// <summary>"fail:"/"crit:" entries with their indented message lines.</summary>
    public IReadOnlyList<string> ErrorEntries()
    {
        var result = new List<string>();
        var lines = LogFile.ReadLines(LogPath);
        for (var i = 0; i < lines.Count; i++)
        {
            if (!IsErrorLine(lines[i]))
            {
                continue;
            }

            var entry = lines[i];
            for (var j = i + 1; j < lines.Count && lines[j].StartsWith(' '); j++)
            {
                entry += "\n" + lines[j];
            }

            result.Add(entry);
        }

        return result;
    }

    /// <summary>Value of the last "acked virtio features 0x..." log line (the frontend's SET_FEATURES), if any.</summary>
    public ulong? LastAckedFeatures()
    {
        var m = AckedFeatures.Matches(LogFile.ReadAll(LogPath));
        return m.Count == 0 ? null : VirtioNetFeatures.ParseHex(m[^1].Groups["hex"].Value);
    }

    public async Task<ulong?> WaitForAckedFeaturesAsync(TimeSpan timeout)
    {
        var m = await LogFile.WaitForLineAsync(LogPath, AckedFeatures, timeout, Process).ConfigureAwait(false);
        return m is null ? null : LastAckedFeatures();
    }

    /// <summary>vhost-user requests in the order logged ("request GET_FEATURES" -> GET_FEATURES).</summary>
    public IReadOnlyList<string> Requests() =>
        Request.Matches(LogFile.ReadAll(LogPath)).Select(m => m.Groups["name"].Value).ToList();

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
