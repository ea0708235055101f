using Microsoft.Extensions.Logging;

namespace VhostCompat.Hosting;

/// <summary>Every log message of the hosting package (hosted service and backend-program runner), with stable event ids.</summary>
internal static partial class Log
{
    [LoggerMessage(1, LogLevel.Information, "vhost-user backend {Name} started on {Endpoint} ({Mode} mode)")]
    public static partial void Started(ILogger logger, string name, string endpoint, string mode);

    [LoggerMessage(2, LogLevel.Information, "vhost-user backend {Name} stopped")]
    public static partial void Stopped(ILogger logger, string name);

    [LoggerMessage(3, LogLevel.Warning, "vhost-user backend {Name} did not stop within {TimeoutMs} ms")]
    public static partial void StopTimedOut(ILogger logger, string name, long timeoutMs);

    [LoggerMessage(4, LogLevel.Warning, "vhost-user backend {Name} did not stop before the host's shutdown timeout")]
    public static partial void StopAbandoned(ILogger logger, string name);

    [LoggerMessage(5, LogLevel.Information, "vhost-user backend {Name} ended: its frontend went away and it does not reconnect")]
    public static partial void Ended(ILogger logger, string name);

    [LoggerMessage(6, LogLevel.Critical, "vhost-user backend {Name} failed: {Message}")]
    public static partial void Failed(ILogger logger, Exception exception, string name, string message);

    [LoggerMessage(7, LogLevel.Information, "Stopping on {Signal}")]
    public static partial void StopSignal(ILogger logger, string signal);

    [LoggerMessage(8, LogLevel.Critical, "{Program} failed: {Message}")]
    public static partial void ProgramFailed(ILogger logger, Exception exception, string program, string message);
}
