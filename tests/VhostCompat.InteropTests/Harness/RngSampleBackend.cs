using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace VhostCompat.InteropTests.Harness;

/// <summary>
/// The sample vhost-user-rng backend (samples/Rng, on the generic host) run as
/// <c>dotnet VhostCompat.Samples.Rng.dll --socket-path SOCK --log-level Debug</c>: it listens, QEMU connects.
/// Its Microsoft.Extensions.Logging simple-console output (stdout) is the log that is checked.
/// </summary>
public sealed class RngSampleBackend : IAsyncDisposable
{
    private static readonly Regex AckedFeatures = new(@"acked virtio features 0x(?<hex>[0-9a-fA-F]+)", RegexOptions.CultureInvariant);
    private static readonly Regex Request = new(@"\brequest (?<name>[A-Z][A-Z0-9_]+)", RegexOptions.CultureInvariant);

    private RngSampleBackend(ExternalProcess process, string socketPath)
    {
        Process = process;
        SocketPath = socketPath;
    }

    public ExternalProcess Process { get; }

    public string SocketPath { get; }

    public string LogPath => Process.StdoutPath;

    public static string DllPath => RepositoryLayout.SampleDll("Rng", "VhostCompat.Samples.Rng");

    public static async Task<BackendCapabilities> GetCapabilitiesAsync(InteropRun run)
    {
        ArgumentNullException.ThrowIfNull(run);
        await using var p = ExternalProcess.Start(new ExternalProcessOptions(
            "rng-capabilities", RepositoryLayout.DotnetHost, [DllPath, "--print-capabilities"], run.Directory, TimeSpan.FromSeconds(60)));
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
    public static async Task<RngSampleBackend> StartAsync(InteropRun run, string socketPath, string name = "rng-backend", TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(run);
        File.Delete(socketPath);
        var process = ExternalProcess.Start(new ExternalProcessOptions(
            name, RepositoryLayout.DotnetHost, [DllPath, "--socket-path", socketPath, "--log-level", "Debug"], run.Directory, timeout ?? TimeSpan.FromMinutes(6))
        {
            Environment = { ["DOTNET_NOLOGO"] = "1", ["NO_COLOR"] = "1" },
        });
        run.AddArtifact($"rng backend log ({name}, pid {process.Pid}, stdout)", process.StdoutPath);
        run.AddArtifact($"rng backend stderr ({name})", process.StderrPath);
        var backend = new RngSampleBackend(process, socketPath);
        if (!await LogFile.WaitForPathAsync(socketPath, TimeSpan.FromSeconds(30), process).ConfigureAwait(false))
        {
            var why = process.HasExited ? $"exited with {process.ExitCode}" : "still running";
            await backend.DisposeAsync().ConfigureAwait(false);
            throw new InvalidOperationException($"rng backend did not create {socketPath} within 30 s ({why}): {process.CommandLine}{run.Diagnostics()}");
        }

        return backend;
    }

    /// <summary>"fail:"/"crit:" entries with their indented message lines.</summary>
    public IReadOnlyList<string> ErrorEntries()
    {
        var result = new List<string>();
        var lines = LogFile.ReadLines(LogPath);
        for (var i = 0; i < lines.Count; i++)
        {
            if (!SampleNetBackend.IsErrorLine(lines[i]))
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

    /// <summary>The request sequence with consecutive repeats collapsed ("SET_VRING_CALL x2").</summary>
    public string RequestSequence() =>
        SampleNetBackend.Collapse(Request.Matches(LogFile.ReadAll(LogPath)).Select(m => m.Groups["name"].Value).ToList());

    /// <summary>Graceful stop (SIGTERM: the generic host stops the backend), then kill by PID.</summary>
    public Task StopAsync() => Process.StopAsync(TimeSpan.FromSeconds(10));

    public ValueTask DisposeAsync() => Process.DisposeAsync();
}
