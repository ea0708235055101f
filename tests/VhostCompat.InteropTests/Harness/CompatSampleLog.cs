using System.Globalization;
using System.Text.RegularExpressions;

namespace VhostCompat.InteropTests.Harness;

/// <summary>The compat-related lines of the sample backend's log (Microsoft.Extensions.Logging simple console, one line per entry).</summary>
public static class CompatSampleLog
{
    public static readonly Regex Connected = new(@"Frontend connected \(", RegexOptions.CultureInvariant);
    public static readonly Regex Disconnected = new(@"Frontend disconnected \((?<conn>[^)]*)\): (?<reason>.*)$", RegexOptions.CultureInvariant);
    public static readonly Regex Acked = new(@"Frontend acked virtio features 0x(?<acked>[0-9a-fA-F]+) \(offered 0x(?<offered>[0-9a-fA-F]+)\)", RegexOptions.CultureInvariant);
    public static readonly Regex Saved = new(@"Saved acked-state record (?<key>\S+): features 0x(?<features>[0-9a-fA-F]+)", RegexOptions.CultureInvariant);
    public static readonly Regex Loaded = new(@"Loaded acked-state record (?<key>\S+): features 0x(?<features>[0-9a-fA-F]+), profile (?<profile>\S+)", RegexOptions.CultureInvariant);

    /// <summary>Guest /init tick line (loop mode), printed about once a second.</summary>
    public static readonly Regex Tick = new(@"VHOSTCOMPAT: tick n=(?<n>\d+) tx_packets=(?<tx>\d+) rx_packets=(?<rx>\d+) status=0x(?<status>[0-9a-fA-F]+)", RegexOptions.CultureInvariant);

    public static IReadOnlyList<Match> Matches(string path, Regex pattern) =>
        LogFile.ReadLines(path).Select(l => pattern.Match(l)).Where(m => m.Success).ToList();

    /// <summary>Waits until <paramref name="path"/> has at least <paramref name="count"/> lines matching <paramref name="pattern"/>; returns the last one.</summary>
    public static async Task<Match?> WaitForCountAsync(string path, Regex pattern, int count, TimeSpan timeout, ExternalProcess? stopWhenExited = null)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (true)
        {
            var exited = stopWhenExited?.HasExited == true;
            var m = Matches(path, pattern);
            if (m.Count >= count)
            {
                return m[^1];
            }

            if (exited || clock.Elapsed >= timeout)
            {
                return null;
            }

            await Task.Delay(100).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Waits until the backend has logged a "Frontend disconnected" line for every "Frontend connected" one (it has
    /// noticed that every frontend went away and released its session), instead of a fixed delay. Returns a
    /// description of what was observed when that did not happen within <paramref name="timeout"/>, otherwise null.
    /// </summary>
    public static async Task<string?> WaitForAllDisconnectedAsync(string path, TimeSpan timeout, ExternalProcess? stopWhenExited = null)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (true)
        {
            int connected = Matches(path, Connected).Count, disconnected = Matches(path, Disconnected).Count;
            if (disconnected >= connected)
            {
                return null;
            }

            if (stopWhenExited?.HasExited == true || clock.Elapsed >= timeout)
            {
                return $"the backend logged {connected} 'Frontend connected' and {disconnected} 'Frontend disconnected' line(s) " +
                       $"{(stopWhenExited?.HasExited == true ? "before it exited" : $"after {timeout.TotalSeconds:F0} s")}";
            }

            await Task.Delay(50).ConfigureAwait(false);
        }
    }

    public static ulong Hex(Match m, string group) => ulong.Parse(m.Groups[group].Value, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);

    /// <summary>
    /// Runs the sample when it is expected to refuse to start (no socket is waited for): returns the exited process
    /// (disposed: exit code and log paths remain readable), or one still running after <paramref name="timeout"/> (then killed by PID).
    /// </summary>
    public static async Task<ExternalProcess> RunExpectingExitAsync(InteropRun run, string socketPath, IEnumerable<string> extraArguments, string name, TimeSpan timeout)
    {
        ArgumentNullException.ThrowIfNull(run);
        var args = new List<string> { SampleNetBackend.DllPath, "--socket-path", socketPath };
        args.AddRange(extraArguments);
        var p = ExternalProcess.Start(new ExternalProcessOptions(name, RepositoryLayout.DotnetHost, args, run.Directory, timeout + TimeSpan.FromSeconds(30))
        {
            Environment = { ["DOTNET_NOLOGO"] = "1", ["NO_COLOR"] = "1" },
        });
        run.AddArtifact($"backend log ({name}, pid {p.Pid}, stdout)", p.StdoutPath);
        run.AddArtifact($"backend stderr ({name})", p.StderrPath);
        await p.WaitForExitAsync(timeout).ConfigureAwait(false);
        await p.DisposeAsync().ConfigureAwait(false);
        return p;
    }
}
