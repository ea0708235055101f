using System.Text.Json;
using VhostCompat.Compat;
using LibCapabilities = VhostCompat.Compat.BackendCapabilities;

namespace VhostCompat.InteropTests.Harness;

/// <summary>What <c>vhost-compat probe</c> said about a live backend: the capability document (file and parsed) and the text form.</summary>
public sealed record ProbedBackend(string Label, string CapsPath, LibCapabilities Capabilities, string Text);

/// <summary>One finding of <c>vhost-compat check --json</c>.</summary>
public sealed record CheckFinding(string Severity, string Code, string Message, IReadOnlyList<string> Features);

/// <summary>What <c>vhost-compat check</c> answered: exit code, verdict and findings (from --json), and the text form.</summary>
public sealed record CheckVerdict(int? ExitCode, bool Compatible, IReadOnlyList<CheckFinding> Findings, string Text, string Json)
{
    public IEnumerable<CheckFinding> Errors => Findings.Where(f => f.Severity == "error");
}

/// <summary>
/// <c>vhost-compat probe</c> and <c>vhost-compat check</c> run as processes (<see cref="CompatCli"/>), their output kept
/// in the run directory: <c>caps-LABEL.json</c> is the probe's capability document, as an operator would save it.
/// </summary>
public static class CompatPreflightRun
{
    private static readonly TimeSpan CliTimeout = TimeSpan.FromSeconds(60);

    /// <summary>Probes the backend listening on <paramref name="socket"/> (JSON into caps-LABEL.json, then the text form).</summary>
    public static async Task<ProbedBackend> ProbeAsync(InteropRun run, string socket, string label)
    {
        ArgumentNullException.ThrowIfNull(run);
        var json = await CompatCli.RunAsync(run, "probe-json-" + label, ["probe", socket, "--json"], CliTimeout).ConfigureAwait(false);
        if (json.ExitCode != 0)
        {
            throw new InvalidOperationException($"vhost-compat probe failed against {label}: {json}");
        }

        var path = run.PathFor("caps-" + label + ".json");
        await File.WriteAllTextAsync(path, json.Stdout).ConfigureAwait(false);
        var caps = CapabilityDocument.Load(path);
        var text = await CompatCli.RunAsync(run, "probe-text-" + label, ["probe", socket], CliTimeout).ConfigureAwait(false);
        if (text.ExitCode != 0)
        {
            throw new InvalidOperationException($"vhost-compat probe (text) failed against {label}: {text}");
        }

        return new ProbedBackend(label, path, caps, text.Stdout);
    }

    /// <summary><c>check --record RECORD --caps CAPS</c>, as JSON (parsed) and as text (for people).</summary>
    public static async Task<CheckVerdict> CheckAsync(InteropRun run, string recordPath, string capsPath, string label)
    {
        ArgumentNullException.ThrowIfNull(run);
        string[] args = ["check", "--record", recordPath, "--caps", capsPath];
        var json = await CompatCli.RunAsync(run, "check-json-" + label, [.. args, "--json"], CliTimeout).ConfigureAwait(false);
        var text = await CompatCli.RunAsync(run, "check-text-" + label, args, CliTimeout).ConfigureAwait(false);
        if (json.ExitCode is not (0 or 1) || text.ExitCode != json.ExitCode)
        {
            throw new InvalidOperationException($"vhost-compat check did not give a verdict (exit 0 or 1, the same for both forms):\n{json}\n{text}");
        }

        using var doc = JsonDocument.Parse(json.Stdout);
        var root = doc.RootElement;
        var findings = root.GetProperty("findings").EnumerateArray().Select(f => new CheckFinding(
            f.GetProperty("severity").GetString()!,
            f.GetProperty("code").GetString()!,
            f.GetProperty("message").GetString()!,
            f.GetProperty("features").EnumerateArray().Select(n => n.GetString()!).ToList())).ToList();
        return new CheckVerdict(json.ExitCode, root.GetProperty("compatible").GetBoolean(), findings, text.Stdout, json.Stdout);
    }
}
