using System.Diagnostics;
using Microsoft.Extensions.Logging;
using VhostCompat.Backend;
using VhostCompat.Compat;
using VhostCompat.Samples.Block;

// A vhost-user-blk backend serving a file, following QEMU's backend-program conventions:
//   --socket-path PATH   listen on PATH (--client: connect to it)      --fd N: inherited socket
//   --image FILE         the disk image (created with --size if missing)
//   --size BYTES         size of a new image (multiple of 512)
//   --read-only          refuse writes (VIRTIO_BLK_F_RO)
//   --queues N           virtqueues (default 1)
//   --queue-depth N      reads and writes in flight per queue, completed out of order (default 32; 1 = one at a time)
//   --io-latency-ms N    add N ms to every read and write (emulates slow storage; default 0)
//   --serial ID          the GET_ID string (default "vhostcompat")
//   --compat-profile P, --state-dir DIR, --print-capabilities, --log-level LEVEL
//   --progress MS        log the first completed request (time since process start: restart-to-serving)
//                        and the completed-request count every MS ms while it changes (default 0: off)
// Signals: SIGTERM stops; SIGUSR1 holds reads and writes before their I/O (an emulated storage stall: they stay
// in flight, and each newly held one is logged per queue); SIGUSR2 releases them.
string? socketPath = null, image = null, profile = null, stateDir = null;
int? inheritedFd = null;
long size = 0;
bool readOnly = false, client = false, printCapabilities = false;
int queues = 1, progressMs = 0, queueDepth = 32, ioLatencyMs = 0;
string serial = "vhostcompat";
LogLevel level = LogLevel.Information;
for (int i = 0; i < args.Length; i++)
{
    string a = args[i];
    int eq = a.IndexOf('=', StringComparison.Ordinal);
    string? inline = eq >= 0 ? a[(eq + 1)..] : null;
    string key = eq >= 0 ? a[..eq] : a;
    string Value() => inline ?? (++i < args.Length ? args[i] : throw new ArgumentException($"{key} needs a value"));
    switch (key)
    {
        case "--socket-path": socketPath = Value(); break;
        case "--fd": inheritedFd = int.Parse(Value(), System.Globalization.CultureInfo.InvariantCulture); break;
        case "--client": client = true; break;
        case "--image": image = Value(); break;
        case "--size": size = long.Parse(Value(), System.Globalization.CultureInfo.InvariantCulture); break;
        case "--read-only": readOnly = true; break;
        case "--queues": queues = int.Parse(Value(), System.Globalization.CultureInfo.InvariantCulture); break;
        case "--queue-depth": queueDepth = int.Parse(Value(), System.Globalization.CultureInfo.InvariantCulture); break;
        case "--io-latency-ms": ioLatencyMs = int.Parse(Value(), System.Globalization.CultureInfo.InvariantCulture); break;
        case "--serial": serial = Value(); break;
        case "--compat-profile": profile = Value(); break;
        case "--state-dir": stateDir = Value(); break;
        case "--print-capabilities": printCapabilities = true; break;
        case "--log-level": level = Enum.Parse<LogLevel>(Value(), ignoreCase: true); break;
        case "--progress": progressMs = int.Parse(Value(), System.Globalization.CultureInfo.InvariantCulture); break;
        case "-h" or "--help":
            Console.WriteLine("usage: VhostCompat.Samples.Block (--socket-path PATH [--client] | --fd N | --print-capabilities) --image FILE [--size BYTES] [--read-only] [--queues N] [--queue-depth N] [--io-latency-ms N] [--serial ID] [--compat-profile P] [--state-dir DIR] [--log-level LEVEL] [--progress MS]");
            return 0;
        default:
            Console.Error.WriteLine($"unknown option {a}");
            return 2;
    }
}

if (queues is < 1 or > 64 || queueDepth is < 1 or > 1024 || ioLatencyMs is < 0 or > 10000 || size < 0 || size % BlockDevice.SectorSize != 0 || progressMs < 0)
{
    Console.Error.WriteLine("--queues must be 1..64, --queue-depth 1..1024, --io-latency-ms 0..10000, --size a multiple of 512 and --progress >= 0");
    return 2;
}

using ILoggerFactory loggerFactory = LoggerFactory.Create(b => b
    .SetMinimumLevel(level)
    .AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "HH:mm:ss.fff "; }));

if (printCapabilities)
{
    using var none = new Microsoft.Win32.SafeHandles.SafeFileHandle();
    Console.WriteLine(CapabilityDocument.Render(new BlockDevice(none, size, readOnly, queues, serial), new VhostUserBackendOptions { SocketPath = "-" }));
    return 0;
}

if (image is null)
{
    Console.Error.WriteLine("--image is required");
    return 2;
}

if (!File.Exists(image))
{
    if (size == 0)
    {
        Console.Error.WriteLine($"{image} does not exist; give --size to create it");
        return 2;
    }

    using var create = File.OpenHandle(image, FileMode.CreateNew, FileAccess.ReadWrite);
    RandomAccess.SetLength(create, size);
}

using var file = File.OpenHandle(image, FileMode.Open, readOnly ? FileAccess.Read : FileAccess.ReadWrite, FileShare.Read);
long length = RandomAccess.GetLength(file);
var device = new BlockDevice(file, length, readOnly, queues, serial, queueDepth, TimeSpan.FromMilliseconds(ioLatencyMs));
var options = new VhostUserBackendOptions
{
    SocketPath = socketPath,
    InheritedFd = inheritedFd,
    Mode = client ? VhostUserSocketMode.Client : VhostUserSocketMode.Server,
    Workers = Math.Min(queues, Environment.ProcessorCount),
    CompatProfile = profile,
    StateDirectory = stateDir,
};

using var stop = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) => { e.Cancel = true; stop.Cancel(); };
using var sigterm = System.Runtime.InteropServices.PosixSignalRegistration.Create(
    System.Runtime.InteropServices.PosixSignal.SIGTERM, ctx => { ctx.Cancel = true; stop.Cancel(); });
var sampleLogger = loggerFactory.CreateLogger("VhostCompat.Samples.Block");
device.Held += (queue, reads, writes) => StallLog.Held(sampleLogger, queue, reads, writes);
using var sigusr1 = System.Runtime.InteropServices.PosixSignalRegistration.Create(
    (System.Runtime.InteropServices.PosixSignal)StallLog.SigUsr1, ctx => { ctx.Cancel = true; StallLog.Holding(sampleLogger); device.HoldRequests(); });
using var sigusr2 = System.Runtime.InteropServices.PosixSignalRegistration.Create(
    (System.Runtime.InteropServices.PosixSignal)StallLog.SigUsr2, ctx => { ctx.Cancel = true; StallLog.Releasing(sampleLogger); device.ReleaseRequests(); });
Thread? progress = progressMs > 0
    ? RequestProgress.Start(device, sampleLogger, TimeSpan.FromMilliseconds(progressMs), stop.Token)
    : null;
try
{
    var backend = new VhostUserBackend(device, options, loggerFactory);
    await backend.RunAsync(stop.Token);
}
catch (Exception ex) when (ex is ArgumentException or FormatException or CompatibilityException or AckedStateCorruptException or IOException)
{
    Console.Error.WriteLine(ex.Message);
    return ex is CompatibilityException ? 3 : 2;
}

stop.Cancel();
progress?.Join();
Console.WriteLine($"requests={device.Requests} resubmitted={device.Resubmitted}");
return 0;

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
