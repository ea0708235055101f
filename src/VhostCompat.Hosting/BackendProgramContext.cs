using System.CommandLine;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace VhostCompat.Hosting;

/// <summary>
/// The parsed command line and the running program, as the callbacks of a <see cref="BackendProgramBuilder"/> see
/// them. Created by <see cref="VhostUserBackendProgram"/> after the arguments parsed; callbacks run one at a time
/// except signal handlers.
/// </summary>
public sealed class BackendProgramContext
{
    private readonly ParseResult _parse;
    private readonly List<IDisposable> _disposables = [];
    private readonly CancellationTokenSource _stopping;

    internal BackendProgramContext(string programName, ParseResult parse, IReadOnlyList<string> socketPaths, int? inheritedFd, bool printCapabilities, CancellationTokenSource stopping)
    {
        ProgramName = programName;
        _parse = parse;
        SocketPaths = socketPaths;
        InheritedFd = inheritedFd;
        PrintCapabilities = printCapabilities;
        _stopping = stopping;
    }

    /// <summary>The program's name, as in its usage line.</summary>
    public string ProgramName { get; }

    /// <summary>The <c>--socket-path</c> values, in order (empty with <c>--fd</c>).</summary>
    public IReadOnlyList<string> SocketPaths { get; }

    /// <summary>The <c>--fd</c> value, or null.</summary>
    public int? InheritedFd { get; }

    /// <summary>Number of ports (devices and backends): one per socket path, one for an inherited fd, at least one.</summary>
    public int PortCount => InheritedFd is null ? Math.Max(SocketPaths.Count, 1) : 1;

    /// <summary>True when the program was asked for <c>--print-capabilities</c>: it renders port 0's device and exits.</summary>
    public bool PrintCapabilities { get; }

    /// <summary>The program's logger factory; <see cref="NullLoggerFactory"/> before logging starts and for <c>--print-capabilities</c>.</summary>
    public ILoggerFactory LoggerFactory { get; internal set; } = NullLoggerFactory.Instance;

    /// <summary>Cancelled on SIGTERM or SIGINT, and once every backend has ended.</summary>
    public CancellationToken Stopping => _stopping.Token;

    /// <summary>The value of a device option added with <see cref="BackendProgramBuilder.AddOption{T}(Option{T})"/> (its default when not given).</summary>
    public T? GetValue<T>(Option<T> option) => _parse.GetValue(option);

    /// <summary>True when <paramref name="option"/> was given on the command line (not just defaulted).</summary>
    public bool IsGiven(Option option) => _parse.GetResult(option) is { Implicit: false };

    /// <summary>Disposes <paramref name="disposable"/> when the program exits, after the backends stopped (last registered, first disposed).</summary>
    /// <returns><paramref name="disposable"/>.</returns>
    public T RegisterForDispose<T>(T disposable)
        where T : IDisposable
    {
        ArgumentNullException.ThrowIfNull(disposable);
        lock (_disposables)
        {
            _disposables.Add(disposable);
        }

        return disposable;
    }

    /// <summary>Requests a graceful stop, as SIGTERM does.</summary>
    public void Stop() => _stopping.Cancel();

    internal void DisposeRegistered()
    {
        IDisposable[] items;
        lock (_disposables)
        {
            items = [.. _disposables];
            _disposables.Clear();
        }

        for (int i = items.Length - 1; i >= 0; i--)
        {
            items[i].Dispose();
        }
    }
}
