using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using System.Numerics;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using VhostCompat.Backend;

namespace VhostCompat.Hosting;

/// <summary>
/// What a backend program adds to the conventions <see cref="VhostUserBackendProgram"/> implements: its own
/// command-line options, the device, the backend options it tunes, logging, and what it does at start, on its
/// own signals and after a clean stop. Passed to the configure callback of
/// <see cref="VhostUserBackendProgram.RunAsync(string[], Action{BackendProgramBuilder})"/>; not thread-safe.
/// </summary>
public sealed class BackendProgramBuilder
{
    private readonly List<Option> _options = [];
    private readonly List<Func<BackendProgramContext, string?>> _validators = [];
    private readonly List<Action<BackendProgramContext>> _starting = [];
    private readonly List<Action<BackendProgramContext>> _stopped = [];
    private readonly List<(PosixSignal Signal, Action<BackendProgramContext> Handler)> _signals = [];
    private readonly List<Action<BackendProgramContext, int, VhostUserBackendOptions>> _configureBackend = [];

    internal BackendProgramBuilder(string programName) => ProgramName = programName;

    /// <summary>The program's name in usage and error lines; defaults to the entry assembly's name.</summary>
    public string ProgramName { get; set; }

    /// <summary>One sentence shown at the top of <c>--help</c>.</summary>
    public string Description { get; set; } = "A vhost-user backend.";

    /// <summary>The level used when <c>--log-level</c> is not given (default <see cref="LogLevel.Information"/>).</summary>
    public LogLevel DefaultLogLevel { get; set; } = LogLevel.Information;

    /// <summary>
    /// When true, <c>--socket-path</c> may be repeated and each path is one port with its own device and backend
    /// (port numbers follow the order of the paths); when false (the default) a second <c>--socket-path</c> is a
    /// usage error. An inherited <c>--fd</c> is always one port.
    /// </summary>
    public bool SeveralSockets { get; set; }

    internal IReadOnlyList<Option> Options => _options;

    internal IReadOnlyList<Func<BackendProgramContext, string?>> Validators => _validators;

    internal IReadOnlyList<Action<BackendProgramContext>> Starting => _starting;

    internal IReadOnlyList<Action<BackendProgramContext>> Stopped => _stopped;

    internal IReadOnlyList<(PosixSignal Signal, Action<BackendProgramContext> Handler)> Signals => _signals;

    internal IReadOnlyList<Action<BackendProgramContext, int, VhostUserBackendOptions>> BackendConfigurations => _configureBackend;

    internal Func<BackendProgramContext, int, VhostUserDevice>? DeviceFactory { get; private set; }

    internal Func<LogLevel, ILoggerFactory>? LoggerFactoryFactory { get; private set; }

    /// <summary>
    /// Adds a device option. Its name must not be one the runner owns (<c>--socket-path</c>, <c>--fd</c>,
    /// <c>--client</c>, <c>--print-capabilities</c>, <c>--compat-profile</c>, <c>--state-dir</c>,
    /// <c>--log-level</c>, <c>--help</c>, <c>--version</c>). A value that does not parse or validate (its
    /// <see cref="Option{T}.CustomParser"/> or <see cref="Option.Validators"/> adding an error) ends the program
    /// with that error as one line and exit code 2. Read the value with <see cref="BackendProgramContext.GetValue{T}(Option{T})"/>.
    /// </summary>
    /// <returns><paramref name="option"/>.</returns>
    public Option<T> AddOption<T>(Option<T> option)
    {
        ArgumentNullException.ThrowIfNull(option);
        _options.Add(option);
        return option;
    }

    /// <summary>
    /// Adds an integer option with a default and an inclusive range, parsed with the invariant culture. A value
    /// that is not a number gives <c>NAME: &lt;the parse error&gt;</c>, one outside the range <c>NAME must be MIN..MAX</c>.
    /// </summary>
    /// <typeparam name="T">An integer type (<see cref="int"/>, <see cref="long"/>, <see cref="uint"/>, ...).</typeparam>
    /// <param name="name">The option, e.g. <c>--queues</c>.</param>
    /// <param name="description">Shown by <c>--help</c>.</param>
    /// <param name="defaultValue">The value when the option is not given (not range-checked).</param>
    /// <param name="min">Smallest accepted value.</param>
    /// <param name="max">Largest accepted value.</param>
    /// <returns>The option, already added.</returns>
    public Option<T> AddNumber<T>(string name, string description, T defaultValue, T min, T max)
        where T : struct, IBinaryInteger<T>
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        var option = new Option<T>(name)
        {
            Description = description,
            HelpName = "N",
            DefaultValueFactory = _ => defaultValue,
            CustomParser = r => ParseNumber(r, name, min, max),
        };
        return AddOption(option);
    }

    /// <summary>
    /// Adds a check across options, run after parsing (also for <c>--print-capabilities</c>: see
    /// <see cref="BackendProgramContext.PrintCapabilities"/>). Return null when the command line is fine, else the
    /// error line; the program then exits with code 2.
    /// </summary>
    public void Validate(Func<BackendProgramContext, string?> validator)
    {
        ArgumentNullException.ThrowIfNull(validator);
        _validators.Add(validator);
    }

    /// <summary>
    /// Creates the device of port <c>port</c> (0 unless <see cref="SeveralSockets"/>). Called once per port before
    /// serving, and once for port 0 to render <c>--print-capabilities</c> (with a null logger, nothing started), so
    /// the document describes the device that serves. Required. The device's <see cref="VhostUserDevice.Catalog"/>
    /// is the catalog published and pinned against. A device that is <see cref="IDisposable"/> is disposed at exit.
    /// </summary>
    public void UseDevice(Func<BackendProgramContext, int, VhostUserDevice> factory)
    {
        ArgumentNullException.ThrowIfNull(factory);
        DeviceFactory = factory;
    }

    /// <summary>
    /// Creates the logger factory for the chosen level (<c>--log-level</c> or <see cref="DefaultLogLevel"/>); it is
    /// disposed (flushed) at exit. Not called for <c>--print-capabilities</c> or bad arguments. Without it nothing is logged.
    /// </summary>
    public void UseLogging(Func<LogLevel, ILoggerFactory> factory)
    {
        ArgumentNullException.ThrowIfNull(factory);
        LoggerFactoryFactory = factory;
    }

    /// <summary>
    /// Tunes the backend options of a port after the runner has set the endpoint (<see cref="VhostUserBackendOptions.SocketPath"/>
    /// or <see cref="VhostUserBackendOptions.InheritedFd"/>, <see cref="VhostUserBackendOptions.Mode"/>),
    /// <see cref="VhostUserBackendOptions.CompatProfile"/> and <see cref="VhostUserBackendOptions.StateDirectory"/>:
    /// workers, a shared worker pool, state key, timeouts.
    /// </summary>
    public void ConfigureBackend(Action<BackendProgramContext, int, VhostUserBackendOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        _configureBackend.Add(configure);
    }

    /// <summary>
    /// Runs once the arguments are valid and logging is up, before the first device is created (not for
    /// <c>--print-capabilities</c>). <see cref="IOException"/> or <see cref="UnauthorizedAccessException"/> thrown
    /// here (e.g. an image file that cannot be opened) ends the program with its message and exit code 1.
    /// </summary>
    public void OnStarting(Action<BackendProgramContext> action)
    {
        ArgumentNullException.ThrowIfNull(action);
        _starting.Add(action);
    }

    /// <summary>
    /// Runs after every backend stopped cleanly (SIGTERM, SIGINT, or each frontend gone for good), with
    /// <see cref="BackendProgramContext.Stopping"/> cancelled: print counters here. Not run after a failure.
    /// </summary>
    public void OnStopped(Action<BackendProgramContext> action)
    {
        ArgumentNullException.ThrowIfNull(action);
        _stopped.Add(action);
    }

    /// <summary>
    /// Handles a signal while the backends serve (its default action is cancelled). SIGTERM and SIGINT are the
    /// runner's (graceful stop). Other numbers can be cast to <see cref="PosixSignal"/>, e.g. <c>(PosixSignal)10</c> for SIGUSR1.
    /// The handler runs on a thread-pool thread.
    /// </summary>
    public void OnSignal(PosixSignal signal, Action<BackendProgramContext> handler)
    {
        ArgumentNullException.ThrowIfNull(handler);
        if (signal is PosixSignal.SIGTERM or PosixSignal.SIGINT)
        {
            throw new ArgumentException("SIGTERM and SIGINT stop the program; they cannot be handled by the device", nameof(signal));
        }

        _signals.Add((signal, handler));
    }

    private static T ParseNumber<T>(ArgumentResult result, string name, T min, T max)
        where T : struct, IBinaryInteger<T>
    {
        string text = result.Tokens.Count > 0 ? result.Tokens[0].Value : string.Empty;
        try
        {
            T value = T.Parse(text, NumberStyles.Integer, CultureInfo.InvariantCulture);
            if (value < min || value > max)
            {
                result.AddError(string.Create(CultureInfo.InvariantCulture, $"{name} must be {min}..{max}"));
            }

            return value;
        }
        catch (Exception ex) when (ex is FormatException or OverflowException)
        {
            result.AddError($"{name}: {ex.Message}");
            return default;
        }
    }
}
