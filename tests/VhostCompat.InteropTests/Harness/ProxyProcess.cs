using System.Text.RegularExpressions;

namespace VhostCompat.InteropTests.Harness;

/// <summary>
/// <c>vhost-compat proxy ARGS</c> run as an operator runs it (<see cref="CompatCli.DllPath"/>), its log (stderr) and
/// trace as run artifacts, and waits on the log lines that mark its states.
/// </summary>
public sealed partial class ProxyProcess : IAsyncDisposable
{
    private ProxyProcess(ExternalProcess process, string? tracePath)
    {
        Process = process;
        TracePath = tracePath;
    }

    public ExternalProcess Process { get; }

    /// <summary>The trace file (<c>--trace</c>), when one was asked for.</summary>
    public string? TracePath { get; }

    /// <summary>The proxy's log: one line per event on stderr.</summary>
    public string LogPath => Process.StderrPath;

    [GeneratedRegex(@"Proxy checked the backend on \S+: it offers 0x(?<offer>[0-9a-f]+), the frontend will see 0x(?<seen>[0-9a-f]+)", RegexOptions.CultureInvariant)]
    public static partial Regex Checked();

    [GeneratedRegex(@"Proxy refused the backend on \S+; the frontend is kept out until a backend can serve it: (?<problems>.*)$", RegexOptions.CultureInvariant)]
    public static partial Regex Refused();

    [GeneratedRegex(@"Proxy connected to the frontend", RegexOptions.CultureInvariant)]
    public static partial Regex FrontendConnected();

    [GeneratedRegex(@"Proxy session (?<id>\d+) ended: (?<reason>.*)$", RegexOptions.CultureInvariant)]
    public static partial Regex SessionEnded();

    /// <summary>Starts the proxy with <paramref name="arguments"/> (after <c>proxy</c>); with <paramref name="trace"/> it writes a text trace to the run directory.</summary>
    public static ProxyProcess Start(InteropRun run, string name, IEnumerable<string> arguments, bool trace = true, TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(run);
        var args = new List<string> { CompatCli.DllPath, "proxy" };
        args.AddRange(arguments);
        string? tracePath = null;
        if (trace)
        {
            tracePath = run.PathFor($"{name}.trace.txt");
            args.AddRange(["--trace", tracePath]);
        }

        var process = ExternalProcess.Start(new ExternalProcessOptions(name, RepositoryLayout.DotnetHost, args, run.Directory, timeout ?? TimeSpan.FromMinutes(8))
        {
            Environment = { ["DOTNET_NOLOGO"] = "1", ["NO_COLOR"] = "1" },
        });
        run.AddArtifact($"vhost-compat proxy log ({name}, pid {process.Pid}, stderr)", process.StderrPath);
        if (tracePath is not null)
        {
            run.AddArtifact($"vhost-compat proxy trace ({name})", tracePath);
        }

        return new ProxyProcess(process, tracePath);
    }

    /// <summary>Waits for the <paramref name="nth"/> (1-based) line matching <paramref name="pattern"/> in the proxy's log.</summary>
    public async Task<Match?> WaitForAsync(Regex pattern, TimeSpan timeout, int nth = 1)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var matches = Matches(pattern);
            if (matches.Count >= nth)
            {
                return matches[nth - 1];
            }

            var left = deadline - DateTime.UtcNow;
            if (left <= TimeSpan.Zero || Process.HasExited)
            {
                return null;
            }

            await Task.Delay(TimeSpan.FromMilliseconds(Math.Min(left.TotalMilliseconds, 200))).ConfigureAwait(false);
        }
    }

    /// <summary>Every line of the log matching <paramref name="pattern"/>.</summary>
    public IReadOnlyList<Match> Matches(Regex pattern) =>
        [.. LogFile.ReadLines(LogPath).Select(l => pattern.Match(l)).Where(m => m.Success)];

    public ValueTask DisposeAsync() => Process.DisposeAsync();
}
