using System.Globalization;

namespace VhostCompat.InteropTests.Harness;

/// <summary>What one run of the <c>vhost-compat</c> tool produced.</summary>
public sealed record CompatCliResult(int? ExitCode, string Stdout, string Stderr, string CommandLine, TimeSpan Elapsed)
{
    public override string ToString() =>
        $"'{CommandLine}' exit {ExitCode?.ToString(CultureInfo.InvariantCulture) ?? "(none, timed out)"} after {Elapsed.TotalSeconds:F1} s\n--- stdout ---\n{Stdout}\n--- stderr ---\n{Stderr}";
}

/// <summary>
/// The <c>vhost-compat</c> tool (src/VhostCompat.Cli) run as a separate process, as an operator would:
/// <c>dotnet src/VhostCompat.Cli/bin/&lt;Configuration&gt;/&lt;tfm&gt;/vhost-compat.dll ARGS</c> (or VHOSTCOMPAT_CLI_DLL).
/// </summary>
public static class CompatCli
{
    public static string DllPath
    {
        get
        {
            if (Environment.GetEnvironmentVariable("VHOSTCOMPAT_CLI_DLL") is { Length: > 0 } explicitPath)
            {
                return explicitPath;
            }

            var tfm = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd('/')).Name;
            var expected = Path.Combine(RepositoryLayout.RepositoryRoot, "src", "VhostCompat.Cli", "bin", RepositoryLayout.Configuration, tfm, "vhost-compat.dll");
            if (File.Exists(expected))
            {
                return expected;
            }

            // The ProjectReference also copies it next to the tests; usable when its runtimeconfig came along.
            var beside = Path.Combine(AppContext.BaseDirectory, "vhost-compat.dll");
            if (File.Exists(beside) && File.Exists(Path.ChangeExtension(beside, ".runtimeconfig.json")))
            {
                return beside;
            }

            throw new FileNotFoundException(
                $"vhost-compat not built: {expected} (dotnet build src/VhostCompat.Cli -c {RepositoryLayout.Configuration}, or set VHOSTCOMPAT_CLI_DLL)", expected);
        }
    }

    /// <summary>Runs <c>vhost-compat ARGS</c> to completion (killed by PID after <paramref name="timeout"/>).</summary>
    public static async Task<CompatCliResult> RunAsync(InteropRun run, string name, IEnumerable<string> arguments, TimeSpan timeout)
    {
        ArgumentNullException.ThrowIfNull(run);
        var args = new List<string> { DllPath };
        args.AddRange(arguments);
        await using var p = ExternalProcess.Start(new ExternalProcessOptions(name, RepositoryLayout.DotnetHost, args, run.Directory, timeout)
        {
            Environment = { ["DOTNET_NOLOGO"] = "1", ["NO_COLOR"] = "1" },
        });
        run.AddArtifact($"vhost-compat stdout ({name})", p.StdoutPath);
        run.AddArtifact($"vhost-compat stderr ({name})", p.StderrPath);
        var exited = await p.WaitForExitAsync(timeout).ConfigureAwait(false);
        var elapsed = p.Elapsed;
        var commandLine = p.CommandLine;
        int? code = exited ? p.ExitCode : null;
        await p.DisposeAsync().ConfigureAwait(false);
        return new CompatCliResult(code, p.ReadStdout(), p.ReadStderr(), commandLine, elapsed);
    }
}
