using System.Diagnostics;
using Microsoft.Extensions.Logging;

namespace VhostCompat.Samples.Block;

/// <summary>
/// <c>--progress</c>: logs when the first request completes (its used-ring entry has been pushed), measured from the
/// process start as the kernel records it, i.e. including runtime start-up — the restart-to-serving time after a
/// crash — and then the completed-request count every interval while it changes, so a log shows that requests were
/// being served up to a given moment. It polls the device's counter (every millisecond until the first request).
/// </summary>
internal static partial class RequestProgress
{
    public static Thread Start(BlockDevice device, ILogger logger, TimeSpan interval, CancellationToken stop)
    {
        DateTime started;
        using (var self = Process.GetCurrentProcess())
        {
            started = self.StartTime.ToUniversalTime();
        }

        var thread = new Thread(() => Run(device, logger, interval, started, stop)) { IsBackground = true, Name = "block-progress" };
        thread.Start();
        return thread;
    }

    private static void Run(BlockDevice device, ILogger logger, TimeSpan interval, DateTime started, CancellationToken stop)
    {
        while (Interlocked.Read(ref device.Requests) == 0)
        {
            if (stop.IsCancellationRequested)
            {
                return;
            }

            Thread.Sleep(1);
        }

        LogFirst(logger, (DateTime.UtcNow - started).TotalMilliseconds);
        long last = 0;
        do
        {
            long n = Interlocked.Read(ref device.Requests);
            if (n != last)
            {
                LogCompleted(logger, n, n - last);
                last = n;
            }
        }
        while (!stop.WaitHandle.WaitOne(interval));
    }

    [LoggerMessage(200, LogLevel.Information, "First request completed {Milliseconds:F0} ms after process start")]
    private static partial void LogFirst(ILogger logger, double milliseconds);

    [LoggerMessage(201, LogLevel.Information, "Requests completed: {Count} (+{Delta})")]
    private static partial void LogCompleted(ILogger logger, long count, long delta);
}

/// <summary>SIGUSR1/SIGUSR2: the emulated storage stall (<see cref="BlockDevice.HoldRequests"/>) and its log lines.</summary>
internal static partial class StallLog
{
    /// <summary>Linux signal numbers (x86-64 and arm64 agree); .NET takes raw numbers cast to PosixSignal.</summary>
    public const int SigUsr1 = 10, SigUsr2 = 12;

    [LoggerMessage(210, LogLevel.Information, "Holding reads and writes before their I/O (SIGUSR1)")]
    public static partial void Holding(ILogger logger);

    [LoggerMessage(211, LogLevel.Information, "Releasing held reads and writes (SIGUSR2)")]
    public static partial void Releasing(ILogger logger);

    [LoggerMessage(212, LogLevel.Information, "Held in flight: queue {Queue} reads={Reads} writes={Writes}")]
    public static partial void Held(ILogger logger, int queue, long reads, long writes);
}
