using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using System.Text;
using Microsoft.Extensions.Logging;

namespace VhostCompat.Hosting;

/// <summary>The options every backend program has (QEMU's conventions plus profile, state and logging) and their checks.</summary>
internal sealed class RunnerOptions
{
    /// <summary>sun_path holds 108 bytes including the terminating NUL.</summary>
    private const int MaxSocketPathBytes = 107;

    private readonly Option<string>? _socketPath;
    private readonly Option<string[]>? _socketPaths;

    public RunnerOptions(BackendProgramBuilder builder)
    {
        const string socketHelp = "Listen on this Unix socket path (with --client: connect to it)";
        if (builder.SeveralSockets)
        {
            _socketPaths = new Option<string[]>("--socket-path")
            {
                Description = socketHelp + "; repeat for more ports",
                HelpName = "PATH",
                AllowMultipleArgumentsPerToken = false,
            };
        }
        else
        {
            _socketPath = new Option<string>("--socket-path") { Description = socketHelp, HelpName = "PATH" };
        }

        Fd = new Option<int?>("--fd")
        {
            Description = "Serve this inherited socket file descriptor (connected or listening)",
            HelpName = "N",
            CustomParser = r => ParseFd(r),
        };
        LogLevel = new Option<LogLevel>("--log-level")
        {
            Description = "Trace, Debug, Information, Warning, Error, Critical or None",
            HelpName = "LEVEL",
            DefaultValueFactory = _ => builder.DefaultLogLevel,
            CustomParser = r => ParseLevel(r, builder.DefaultLogLevel),
        };
    }

    public Option<int?> Fd { get; }

    public Option<bool> Client { get; } = new("--client") { Description = "Connect to --socket-path (the frontend listens) and reconnect when it goes away" };

    public Option<bool> PrintCapabilities { get; } = new("--print-capabilities") { Description = "Print the capability document (JSON) on stdout and exit" };

    public Option<string?> CompatProfile { get; } = new("--compat-profile")
    {
        Description = "Pin the guest-visible interface: a profile id of the catalog or a value list (e.g. version_1=on,max_ring=256)",
        HelpName = "ID|VALUES",
    };

    public Option<string?> StateDir { get; } = new("--state-dir") { Description = "Keep acked-state records in this directory (created if missing)", HelpName = "DIR" };

    public Option<string?> SocketMode { get; } = new("--socket-mode") { Description = "Permissions of the listening socket, octal (e.g. 0660 with --socket-group so a QEMU run by libvirt can connect)", HelpName = "MODE" };

    public Option<string?> SocketGroup { get; } = new("--socket-group") { Description = "Group of the listening socket: a name from /etc/group or a numeric gid", HelpName = "GROUP" };

    public Option<LogLevel> LogLevel { get; }

    /// <summary>--socket-mode as permission bits; null when not given.</summary>
    public UnixFileMode? Mode(ParseResult parse) =>
        parse.GetValue(SocketMode) is { } text ? (UnixFileMode)System.Convert.ToInt32(text, 8) : null;

    public void AddTo(RootCommand root)
    {
        root.Options.Add(_socketPaths ?? (Option)_socketPath!);
        root.Options.Add(Fd);
        root.Options.Add(Client);
        root.Options.Add(PrintCapabilities);
        root.Options.Add(CompatProfile);
        root.Options.Add(StateDir);
        root.Options.Add(SocketMode);
        root.Options.Add(SocketGroup);
        root.Options.Add(LogLevel);
    }

    public IReadOnlyList<string> SocketPaths(ParseResult parse) =>
        _socketPaths is not null ? parse.GetValue(_socketPaths) ?? [] : parse.GetValue(_socketPath!) is { } p ? [p] : [];

    /// <summary>The combination of the options; null when it is fine.</summary>
    public string? Check(ParseResult parse, BackendProgramContext context)
    {
        if (context.SocketPaths.Count > 0 && context.InheritedFd is not null)
        {
            return "--socket-path and --fd cannot be combined";
        }

        if (context.InheritedFd is not null && parse.GetValue(Client))
        {
            return "--client needs --socket-path (an inherited --fd is already connected or listening)";
        }

        if (context.SocketPaths.Any(string.IsNullOrEmpty))
        {
            return "--socket-path: the path is empty";
        }

        if (!context.PrintCapabilities && context.SocketPaths.Count == 0 && context.InheritedFd is null)
        {
            return "--socket-path or --fd is required";
        }

        if (context.SocketPaths.Distinct(StringComparer.Ordinal).Count() != context.SocketPaths.Count)
        {
            return "--socket-path: the same path is given twice";
        }

        if (parse.GetValue(SocketMode) is { } mode && (mode.Length is 0 or > 4 || !mode.All(c => c is >= '0' and <= '7') || System.Convert.ToInt32(mode, 8) > 0x1FF))
        {
            return $"--socket-mode: '{mode}' is not an octal mode 0..0777";
        }

        if (parse.GetValue(SocketGroup) is { } group)
        {
            try
            {
                new VhostCompat.Backend.VhostUserBackendOptions { SocketPath = "/", SocketGroup = group }.Validate();
            }
            catch (ArgumentException ex)
            {
                return "--socket-group: " + ex.Message.Split(" (Parameter", 2)[0];
            }
        }

        return parse.GetValue(CompatProfile) is { Length: 0 } ? "--compat-profile: the value is empty" : null;
    }

    /// <summary>What binding or the state store would otherwise fail on with an exception: checked before serving.</summary>
    public string? CheckEndpoints(ParseResult parse, BackendProgramContext context)
    {
        bool client = parse.GetValue(Client);
        foreach (string path in context.SocketPaths)
        {
            string full = Path.GetFullPath(path);
            if (Encoding.UTF8.GetByteCount(full) > MaxSocketPathBytes)
            {
                return string.Create(CultureInfo.InvariantCulture, $"--socket-path {path}: longer than the {MaxSocketPathBytes} bytes a Unix socket address holds");
            }

            string? directory = Path.GetDirectoryName(full);
            if (!client && directory is not null && !Directory.Exists(directory))
            {
                return $"--socket-path {path}: directory {directory} does not exist";
            }

            if (Directory.Exists(full))
            {
                return $"--socket-path {path}: is a directory";
            }
        }

        return parse.GetValue(StateDir) is { } dir ? CheckStateDirectory(dir) : null;
    }

    private static string? CheckStateDirectory(string dir)
    {
        // The store writes records atomically (temporary file, rename) once the driver is up: find out now, not then.
        try
        {
            Directory.CreateDirectory(dir);
            string probe = Path.Combine(dir, string.Create(CultureInfo.InvariantCulture, $".vhostcompat-probe-{Environment.ProcessId}"));
            using (new FileStream(probe, FileMode.Create, FileAccess.Write, FileShare.None, 1, FileOptions.DeleteOnClose))
            {
            }

            return null;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            return $"--state-dir {dir}: not writable: {ex.Message}";
        }
    }

    private static int? ParseFd(ArgumentResult result)
    {
        string text = result.Tokens.Count > 0 ? result.Tokens[0].Value : string.Empty;
        if (int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int fd))
        {
            return fd;
        }

        result.AddError($"--fd: '{text}' is not a file descriptor number");
        return null;
    }

    private static LogLevel ParseLevel(ArgumentResult result, LogLevel fallback)
    {
        string text = result.Tokens.Count > 0 ? result.Tokens[0].Value : string.Empty;
        try
        {
            var level = Enum.Parse<LogLevel>(text, ignoreCase: true);
            if (Enum.IsDefined(level) && !text.All(char.IsAsciiDigit))
            {
                return level;
            }

            result.AddError($"--log-level: '{text}' is not a level (Trace, Debug, Information, Warning, Error, Critical, None)");
        }
        catch (ArgumentException ex)
        {
            // Enum.Parse's own message ("Requested value 'loud' was not found."), as the samples always printed.
            result.AddError($"--log-level: {ex.Message}");
        }

        return fallback;
    }
}
