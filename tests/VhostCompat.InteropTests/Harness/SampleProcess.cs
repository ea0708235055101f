using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace VhostCompat.InteropTests.Harness;

/// <summary>
/// What the sample backends (<see cref="SampleNetBackend"/>, <see cref="RngSampleBackend"/>, <see cref="BlockSampleBackend"/>)
/// share: <c>dotnet &lt;sample&gt;.dll ...</c> started in the run directory with its stdout (the simple-console log) and
/// stderr as artifacts, the wait for its listening socket, --print-capabilities, and reading the log.
/// </summary>
internal static class SampleProcess
{
    private static readonly TimeSpan ListenTimeout = TimeSpan.FromSeconds(30);
    private static readonly Regex AckedFeatures = new(@"acked virtio features 0x(?<hex>[0-9a-fA-F]+)", RegexOptions.CultureInvariant);
    private static readonly Regex Request = new(@"\brequest (?<name>[A-Z][A-Z0-9_]+)", RegexOptions.CultureInvariant);

    /// <summary>Runs <c>dotnet DLL --print-capabilities</c> (60 s at most) and parses what it prints.</summary>
    public static async Task<BackendCapabilities> GetCapabilitiesAsync(InteropRun run, string name, string dllPath)
    {
        ArgumentNullException.ThrowIfNull(run);
        await using var p = ExternalProcess.Start(new ExternalProcessOptions(
            name, RepositoryLayout.DotnetHost, [dllPath, "--print-capabilities"], run.Directory, TimeSpan.FromSeconds(60)));
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

    /// <summary>
    /// Starts <c>dotnet ARGS</c> (ARGS begins with the sample's dll) without logo and colours, bounded by
    /// <paramref name="timeout"/> (default 6 min), and lists its stdout and stderr as "<paramref name="label"/> log/stderr".
    /// </summary>
    /// <remarks>
    /// With <c>VHOSTCOMPAT_SAMPLE_NATIVE_DIR</c> set (tests/VhostCompat.Benchmarks/scripts/restart-aot.sh), a sample whose
    /// NativeAOT executable (the dll's name without <c>.dll</c>) is in that directory runs as that executable instead.
    /// </remarks>
    public static ExternalProcess Start(InteropRun run, string name, IEnumerable<string> args, TimeSpan? timeout, string label)
    {
        var argv = args.ToList();
        string host = RepositoryLayout.DotnetHost;
        if (Environment.GetEnvironmentVariable("VHOSTCOMPAT_SAMPLE_NATIVE_DIR") is { Length: > 0 } nativeDir && argv.Count > 0
            && argv[0].EndsWith(".dll", StringComparison.Ordinal)
            && Path.Combine(nativeDir, Path.GetFileNameWithoutExtension(argv[0])) is var native && File.Exists(native))
        {
            host = native;
            argv.RemoveAt(0);
        }

        var process = ExternalProcess.Start(new ExternalProcessOptions(name, host, argv, run.Directory, timeout ?? TimeSpan.FromMinutes(6))
        {
            Environment = { ["DOTNET_NOLOGO"] = "1", ["NO_COLOR"] = "1" },
        });
        run.AddArtifact($"{label} log ({name}, pid {process.Pid}, stdout)", process.StdoutPath);
        run.AddArtifact($"{label} stderr ({name})", process.StderrPath);
        return process;
    }

    /// <summary>
    /// Waits up to 30 s until <paramref name="socketPath"/> exists (or, given <paramref name="listeningLine"/>, until
    /// the log shows it). If not, disposes <paramref name="backend"/> and throws with the run's diagnostics.
    /// </summary>
    public static async Task WaitUntilListeningAsync(
        InteropRun run, ExternalProcess process, IAsyncDisposable backend, string socketPath, string what, Regex? listeningLine = null)
    {
        var listening = listeningLine is not null
            ? await LogFile.WaitForLineAsync(process.StdoutPath, listeningLine, ListenTimeout, process).ConfigureAwait(false) is not null
            : await LogFile.WaitForPathAsync(socketPath, ListenTimeout, process).ConfigureAwait(false);
        if (!listening)
        {
            var why = process.HasExited ? $"exited with {process.ExitCode}" : "still running";
            await backend.DisposeAsync().ConfigureAwait(false);
            throw new InvalidOperationException($"{what} did not create {socketPath} within 30 s ({why}): {process.CommandLine}{run.Diagnostics()}");
        }
    }

    /// <summary>"fail:"/"crit:" entries (<see cref="SampleNetBackend.IsErrorLine"/>) with their indented continuation lines.</summary>
    public static IReadOnlyList<string> ErrorEntries(IReadOnlyList<string> lines)
    {
        var result = new List<string>();
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

    /// <summary>Value of the last "acked virtio features 0x..." line of the log, if any.</summary>
    public static ulong? LastAckedFeatures(string logPath)
    {
        var m = AckedFeatures.Matches(LogFile.ReadAll(logPath));
        return m.Count == 0 ? null : VirtioNetFeatures.ParseHex(m[^1].Groups["hex"].Value);
    }

    /// <summary>Waits for an "acked virtio features" line; then the last one's value.</summary>
    public static async Task<ulong?> WaitForAckedFeaturesAsync(string logPath, TimeSpan timeout, ExternalProcess process)
    {
        var m = await LogFile.WaitForLineAsync(logPath, AckedFeatures, timeout, process).ConfigureAwait(false);
        return m is null ? null : LastAckedFeatures(logPath);
    }

    /// <summary>vhost-user requests in the order logged ("request GET_FEATURES" -> GET_FEATURES).</summary>
    public static IReadOnlyList<string> Requests(string logPath) =>
        Request.Matches(LogFile.ReadAll(logPath)).Select(m => m.Groups["name"].Value).ToList();
}
