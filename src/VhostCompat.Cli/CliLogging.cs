using System.Globalization;
using Microsoft.Extensions.Logging;

namespace VhostCompat.Cli;

/// <summary>
/// The tool's log output for long-running commands (<c>proxy</c>, <c>trace</c>): one line per entry on stderr,
/// <c>UTC-time level category: message</c>, exceptions reduced to their message (stdout stays free for data).
/// </summary>
internal sealed class StderrLoggerProvider(TextWriter writer, LogLevel minimum) : ILoggerProvider
{
    private readonly object _lock = new();

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void Dispose()
    {
    }

    private void Write(string category, LogLevel level, string message)
    {
        string line = string.Create(CultureInfo.InvariantCulture, $"{DateTime.UtcNow:HH:mm:ss.fff} {Label(level)} {category}: {CliApp.OneLine(message)}");
        lock (_lock)
        {
            try
            {
                writer.WriteLine(line);
                writer.Flush();
            }
            catch (IOException)
            {
                // A closed stderr must not stop the proxy.
            }
        }
    }

    private static string Label(LogLevel level) => level switch
    {
        LogLevel.Trace => "trce",
        LogLevel.Debug => "dbug",
        LogLevel.Information => "info",
        LogLevel.Warning => "warn",
        LogLevel.Error => "fail",
        _ => "crit",
    };

    private sealed class Logger(StderrLoggerProvider provider, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= provider._minimum && logLevel != LogLevel.None;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (IsEnabled(logLevel))
            {
                provider.Write(category, logLevel, exception is null ? formatter(state, exception) : $"{formatter(state, exception)} ({exception.Message})");
            }
        }
    }

    private readonly LogLevel _minimum = minimum;
}

/// <summary>A logger factory over one provider (the tool carries no logging package beyond the abstractions).</summary>
internal sealed class SingleProviderLoggerFactory(ILoggerProvider provider) : ILoggerFactory
{
    public void AddProvider(ILoggerProvider provider)
    {
    }

    public ILogger CreateLogger(string categoryName) => provider.CreateLogger(categoryName);

    public void Dispose()
    {
    }
}
