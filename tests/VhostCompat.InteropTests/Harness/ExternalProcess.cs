using System.Diagnostics;
using System.Runtime.InteropServices;

namespace VhostCompat.InteropTests.Harness;

/// <summary>What to run, where its output goes and how long it may live.</summary>
public sealed class ExternalProcessOptions
{
    public ExternalProcessOptions(string name, string fileName, IEnumerable<string> arguments, string logDirectory, TimeSpan timeout)
    {
        Name = name;
        FileName = fileName;
        Arguments = arguments.ToList();
        LogDirectory = logDirectory;
        Timeout = timeout;
    }

    /// <summary>Short name used for the log files: NAME.stdout, NAME.stderr.</summary>
    public string Name { get; }

    public string FileName { get; }

    public IReadOnlyList<string> Arguments { get; }

    public string LogDirectory { get; }

    /// <summary>Hard upper bound on the process lifetime, enforced by coreutils <c>timeout</c> (so it also holds if the test host dies) and by this class.</summary>
    public TimeSpan Timeout { get; }

    public string? WorkingDirectory { get; init; }

    public IDictionary<string, string> Environment { get; } = new Dictionary<string, string>(StringComparer.Ordinal);
}

/// <summary>
/// A child process whose stdout/stderr go straight to files (written by the kernel, not by us, so nothing
/// is lost if the test host dies), which runs under a hard timeout and is killed by PID on dispose.
/// </summary>
public sealed partial class ExternalProcess : IAsyncDisposable
{
    private const int SIGTERM = 15;
    private static readonly string? TimeoutTool = File.Exists("/usr/bin/timeout") ? "/usr/bin/timeout" : null;

    private readonly Process _process;
    private readonly CancellationTokenSource _deadline;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private int _disposed;
    private volatile bool _processDisposed;
    private bool _finalHasExited;
    private int? _finalExitCode;

    private ExternalProcess(ExternalProcessOptions options, Process process)
    {
        Options = options;
        _process = process;
        Pid = process.Id;
        StdoutPath = Path.Combine(options.LogDirectory, options.Name + ".stdout");
        StderrPath = Path.Combine(options.LogDirectory, options.Name + ".stderr");
        _deadline = new CancellationTokenSource(options.Timeout + TimeSpan.FromSeconds(10));
        _deadline.Token.Register(() => KillNow());
    }

    public ExternalProcessOptions Options { get; }

    public string Name => Options.Name;

    /// <summary>PID of the direct child (the <c>timeout</c> wrapper when present; it forwards signals).</summary>
    public int Pid { get; }

    public string StdoutPath { get; }

    public string StderrPath { get; }

    public TimeSpan Elapsed => _clock.Elapsed;

    public bool HasExited => _processDisposed ? _finalHasExited : _process.HasExited;

    /// <summary>Exit code, or null while running. 124 means the hard timeout fired (coreutils timeout), 128+N signal N.</summary>
    public int? ExitCode => _processDisposed ? _finalExitCode : _process.HasExited ? _process.ExitCode : null;

    public string CommandLine => Quote(Options.FileName) + " " + string.Join(' ', Options.Arguments.Select(Quote));

    public static ExternalProcess Start(ExternalProcessOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        Directory.CreateDirectory(options.LogDirectory);
        var stdout = Path.Combine(options.LogDirectory, options.Name + ".stdout");
        var stderr = Path.Combine(options.LogDirectory, options.Name + ".stderr");
        File.WriteAllText(Path.Combine(options.LogDirectory, options.Name + ".cmdline"),
            Quote(options.FileName) + " " + string.Join(' ', options.Arguments.Select(Quote)) + "\n");

        // sh redirects and then execs: the PID we get is the program itself (or its timeout wrapper).
        var psi = new ProcessStartInfo("/bin/sh")
        {
            UseShellExecute = false,
            WorkingDirectory = options.WorkingDirectory ?? options.LogDirectory,
        };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add("exec \"$@\" </dev/null >\"$VHOSTCOMPAT_STDOUT\" 2>\"$VHOSTCOMPAT_STDERR\"");
        psi.ArgumentList.Add("sh");
        if (TimeoutTool is not null)
        {
            psi.ArgumentList.Add(TimeoutTool);
            psi.ArgumentList.Add("--kill-after=5");
            psi.ArgumentList.Add(((int)Math.Ceiling(options.Timeout.TotalSeconds)).ToString(System.Globalization.CultureInfo.InvariantCulture));
        }

        psi.ArgumentList.Add(options.FileName);
        foreach (var a in options.Arguments)
        {
            psi.ArgumentList.Add(a);
        }

        psi.Environment["VHOSTCOMPAT_STDOUT"] = stdout;
        psi.Environment["VHOSTCOMPAT_STDERR"] = stderr;
        foreach (var (k, v) in options.Environment)
        {
            psi.Environment[k] = v;
        }

        var process = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {options.FileName}");
        return new ExternalProcess(options, process);
    }

    /// <summary>Waits for the process to exit; returns false when it is still running after <paramref name="timeout"/>.</summary>
    public async Task<bool> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(cts.Token).ConfigureAwait(false);
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    /// <summary>
    /// SIGTERM to the program itself (not to its timeout wrapper: GNU timeout forwards a TERM to the child and then to
    /// its whole process group, so the program can get a second TERM while it is already shutting down, after its
    /// handler is gone, and die with 143), then SIGKILL to the process tree after <paramref name="grace"/>.
    /// </summary>
    public async Task StopAsync(TimeSpan grace)
    {
        if (_process.HasExited)
        {
            return;
        }

        _ = Kill(ProgramPid(), SIGTERM);
        if (!await WaitForExitAsync(grace).ConfigureAwait(false))
        {
            KillNow();
            await WaitForExitAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        }
    }

    /// <summary>The program's PID: <see cref="Pid"/>, or the only child of the timeout wrapper (found in /proc, never by name).</summary>
    public int ProgramPid()
    {
        try
        {
            if (File.ReadAllText($"/proc/{Pid}/comm").Trim() != "timeout")
            {
                return Pid;
            }

            var children = Directory.GetDirectories($"/proc/{Pid}/task")
                .SelectMany(t => File.ReadAllText(Path.Combine(t, "children")).Split(' ', StringSplitOptions.RemoveEmptyEntries))
                .ToList();
            return children.Count == 1 && int.TryParse(children[0], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int child) ? child : Pid;
        }
        catch (IOException)
        {
            return Pid; // gone meanwhile: signalling the wrapper is harmless
        }
    }

    public string ReadStdout() => LogFile.ReadAll(StdoutPath);

    public string ReadStderr() => LogFile.ReadAll(StderrPath);

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        try
        {
            await StopAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
        }
        finally
        {
            _finalHasExited = _process.HasExited;
            _finalExitCode = _finalHasExited ? _process.ExitCode : null;
            _processDisposed = true;
            await _deadline.CancelAsync().ConfigureAwait(false);
            _deadline.Dispose();
            _process.Dispose();
        }
    }

    public override string ToString() => $"{Name} (pid {Pid})";

    private void KillNow()
    {
        try
        {
            if (!_process.HasExited)
            {
                // Kills exactly this PID and its descendants, never anything found by name.
                _process.Kill(entireProcessTree: true);
            }
        }
        catch (InvalidOperationException)
        {
            // already gone
        }
        catch (System.ComponentModel.Win32Exception)
        {
            // already gone
        }
    }

    private static string Quote(string s) =>
        s.Length > 0 && s.All(c => char.IsAsciiLetterOrDigit(c) || "-_./=:,@+%".Contains(c, StringComparison.Ordinal))
            ? s
            : "'" + s.Replace("'", "'\\''", StringComparison.Ordinal) + "'";

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);
}
