using System.CommandLine;
using System.CommandLine.Parsing;
using System.Reflection;
using Microsoft.Extensions.Logging;

namespace VhostCompat.Hosting;

/// <summary>
/// The <c>Main</c> of a vhost-user backend program. It implements QEMU's backend-program conventions
/// (docs/interop/vhost-user.rst): <c>--socket-path PATH</c> (listen, or connect with <c>--client</c>),
/// <c>--fd N</c> (an inherited connected or listening socket), <c>--print-capabilities</c> (the capability
/// document on stdout, exit 0), a graceful stop on SIGTERM (and SIGINT), and a non-zero exit when the requested
/// interface cannot be presented; plus <c>--compat-profile ID|VALUES</c>, <c>--state-dir DIR</c> and
/// <c>--log-level LEVEL</c>. The device adds its own options through a <see cref="BackendProgramBuilder"/>.
/// </summary>
/// <remarks>
/// Exit codes: <see cref="ExitOk"/> after a clean stop, <see cref="ExitFailure"/> for a failure while starting
/// or serving, <see cref="ExitUsage"/> for bad arguments (including a socket path whose directory is missing or
/// that is too long, and a state directory that cannot be written), <see cref="ExitIncompatible"/> when the
/// requested profile or the saved acked-state record cannot be honoured by this build. Every failure is one line
/// on stderr, never a stack trace; for bad arguments stdout adds <c>run 'PROGRAM --help' for usage</c>.
/// </remarks>
public static class VhostUserBackendProgram
{
    /// <summary>Clean stop: SIGTERM, SIGINT, or every frontend gone for good; also <c>--help</c> and <c>--print-capabilities</c>.</summary>
    public const int ExitOk = 0;

    /// <summary>A failure while starting or serving (the socket is served by another process, an I/O error, a device error).</summary>
    public const int ExitFailure = 1;

    /// <summary>Bad arguments: unknown option, missing or malformed value, unusable socket path or state directory.</summary>
    public const int ExitUsage = 2;

    /// <summary>The requested interface cannot be presented: an unknown or unavailable <c>--compat-profile</c>, or an acked-state record this build cannot honour.</summary>
    public const int ExitIncompatible = 3;

    /// <summary>
    /// Parses <paramref name="args"/>, then prints the capability document or serves until SIGTERM/SIGINT, with the
    /// program's stdout and stderr. Returns the exit code (see the type's remarks); it does not throw for bad input.
    /// </summary>
    /// <param name="args">The command line, without the program name.</param>
    /// <param name="configure">Adds the device, its options and logging (<see cref="BackendProgramBuilder.UseDevice"/> is required).</param>
    /// <returns>The process exit code.</returns>
    /// <exception cref="InvalidOperationException"><paramref name="configure"/> did not set a device (a program bug, not bad input).</exception>
    public static Task<int> RunAsync(string[] args, Action<BackendProgramBuilder> configure) =>
        RunAsync(args, configure, Console.Out, Console.Error, handleSignals: true, CancellationToken.None);

    /// <summary>The runner with explicit writers and stop token (tests run it in-process without signal handlers).</summary>
    internal static async Task<int> RunAsync(
        string[] args, Action<BackendProgramBuilder> configure, TextWriter output, TextWriter error, bool handleSignals, CancellationToken stop)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(configure);
        var builder = new BackendProgramBuilder(Assembly.GetEntryAssembly()?.GetName().Name ?? "vhost-user-backend");
        configure(builder);
        if (builder.DeviceFactory is null)
        {
            throw new InvalidOperationException("the backend program has no device: call UseDevice in the configure callback");
        }

        var own = new RunnerOptions(builder);
        var root = new RootCommand(builder.Description);
        own.AddTo(root);
        foreach (Option option in builder.Options)
        {
            root.Options.Add(option);
        }

        ParseResult parse = root.Parse(args, new ParserConfiguration { ResponseFileTokenReplacer = null });
        if (parse.Errors.Count > 0)
        {
            return await UsageAsync(builder.ProgramName, parse.Errors[0].Message, output, error).ConfigureAwait(false);
        }

        if (parse.Action is not null)
        {
            // --help or --version.
            return await parse.InvokeAsync(new InvocationConfiguration { Output = output, Error = error }, stop).ConfigureAwait(false);
        }

        using var stopping = CancellationTokenSource.CreateLinkedTokenSource(stop);
        var context = new BackendProgramContext(builder.ProgramName, parse, own.SocketPaths(parse), parse.GetValue(own.Fd), parse.GetValue(own.PrintCapabilities), stopping);
        string? invalid = own.Check(parse, context);
        foreach (var validate in builder.Validators)
        {
            invalid ??= validate(context);
        }

        if (invalid is not null)
        {
            return await UsageAsync(builder.ProgramName, invalid, output, error).ConfigureAwait(false);
        }

        var run = new BackendProgramRun(builder, context, output, error);
        try
        {
            if (context.PrintCapabilities)
            {
                return await run.PrintCapabilitiesAsync().ConfigureAwait(false);
            }

            string? endpoint = own.CheckEndpoints(parse, context);
            if (endpoint is not null)
            {
                return await UsageAsync(builder.ProgramName, endpoint, output, error).ConfigureAwait(false);
            }

            LogLevel level = parse.GetValue(own.LogLevel);
            return await run.ServeAsync(level, parse.GetValue(own.Client), parse.GetValue(own.CompatProfile), parse.GetValue(own.StateDir), handleSignals, own.Mode(parse), parse.GetValue(own.SocketGroup)).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // A device or hook bug: the stack goes to the log (if any), the operator gets one line.
            Log.ProgramFailed(context.LoggerFactory.CreateLogger("VhostCompat.Hosting"), ex, builder.ProgramName, ex.Message);
            await error.WriteLineAsync(OneLine($"{ex.GetType().Name}: {ex.Message}")).ConfigureAwait(false);
            return ExitFailure;
        }
        finally
        {
            run.Dispose();
        }
    }

    /// <summary>One line on stderr (control characters flattened), the usage hint on stdout, exit code 2.</summary>
    private static async Task<int> UsageAsync(string program, string message, TextWriter output, TextWriter error)
    {
        await error.WriteLineAsync(OneLine(message)).ConfigureAwait(false);
        await error.FlushAsync().ConfigureAwait(false);
        await output.WriteLineAsync($"run '{program} --help' for usage").ConfigureAwait(false);
        await output.FlushAsync().ConfigureAwait(false);
        return ExitUsage;
    }

    internal static string OneLine(string message)
    {
        string[] lines = message.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        return string.Join("; ", lines);
    }
}
