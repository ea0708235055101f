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

/// <summary>
/// The sample vhost-user net backend (samples/Net) run as <c>dotnet VhostCompat.Samples.Net.dll --socket-path SOCK</c>:
/// it listens, QEMU connects. Its Microsoft.Extensions.Logging console output (stdout) is the log that is checked.
/// </summary>
public sealed class SampleNetBackend : IAsyncDisposable
{
    // Simple console format, optionally after a timestamp (colour codes removed first): "06:33:12.123 fail: Category[0] ...".
    private static readonly Regex ErrorStart = new(@"^(?:[0-9:.T+\-/]+ ){0,2}(?:fail|crit):", RegexOptions.CultureInvariant);
    private static readonly Regex AnsiEscape = new(@"\x1b\[[0-9;]*m", RegexOptions.CultureInvariant);
    private static readonly Regex AckedFeatures = new(@"acked virtio features 0x(?<hex>[0-9a-fA-F]+)", RegexOptions.CultureInvariant);
    private static readonly Regex Request = new(@"\brequest (?<name>[A-Z][A-Z0-9_]+)", RegexOptions.CultureInvariant);

    private SampleNetBackend(ExternalProcess process, string socketPath)
    {
        Process = process;
        SocketPath = socketPath;
    }

    public ExternalProcess Process { get; }

    public string SocketPath { get; }

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
    public static async Task<SampleNetBackend> StartAsync(InteropRun run, string socketPath, IEnumerable<string>? extraArguments = null, string name = "backend", TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(run);
        File.Delete(socketPath);
        var args = new List<string> { DllPath, "--socket-path", socketPath };
        args.AddRange(extraArguments ?? []);
        var process = ExternalProcess.Start(new ExternalProcessOptions(name, RepositoryLayout.DotnetHost, args, run.Directory, timeout ?? TimeSpan.FromMinutes(6))
        {
            Environment = { ["DOTNET_NOLOGO"] = "1", ["NO_COLOR"] = "1" },
        });
        run.AddArtifact($"backend log ({name}, pid {process.Pid}, stdout)", process.StdoutPath);
        run.AddArtifact($"backend stderr ({name})", process.StderrPath);
        var backend = new SampleNetBackend(process, socketPath);
        if (!await LogFile.WaitForPathAsync(socketPath, TimeSpan.FromSeconds(30), process).ConfigureAwait(false))
        {
            var why = process.HasExited ? $"exited with {process.ExitCode}" : "still running";
            await backend.DisposeAsync().ConfigureAwait(false);
            throw new InvalidOperationException($"backend did not create {socketPath} within 30 s ({why}): {process.CommandLine}{run.Diagnostics()}");
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

    /// <summary>Graceful stop (SIGTERM), then kill by PID.</summary>
    public Task StopAsync() => Process.StopAsync(TimeSpan.FromSeconds(10));

    public ValueTask DisposeAsync() => Process.DisposeAsync();
}
