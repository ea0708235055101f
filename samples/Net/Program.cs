using Microsoft.Extensions.Logging;
using VhostCompat.Backend;
using VhostCompat.Compat;
using VhostCompat.Samples.Net;

// A vhost-user-net backend following QEMU's backend-program conventions:
//   --socket-path PATH   listen on PATH (or connect to it with --client)
//   --fd N               use inherited socket fd N (connected or listening)
//   --print-capabilities print the capability document and exit
//   --queue-pairs N      queue pairs (default 1)
//   --log-level LEVEL    Trace|Debug|Information|Warning|Error (default Debug: every request is logged)
var options = new VhostUserBackendOptions();
int queuePairs = 1;
bool printCapabilities = false;
LogLevel level = LogLevel.Debug;
for (int i = 0; i < args.Length; i++)
{
    string a = args[i];
    string? inline = a.Contains('=', StringComparison.Ordinal) ? a[(a.IndexOf('=', StringComparison.Ordinal) + 1)..] : null;
    string key = inline is null ? a : a[..a.IndexOf('=', StringComparison.Ordinal)];
    string Value() => inline ?? (++i < args.Length ? args[i] : throw new ArgumentException($"{key} needs a value"));
    switch (key)
    {
        case "--socket-path": options.SocketPath = Value(); break;
        case "--fd": options.InheritedFd = int.Parse(Value(), System.Globalization.CultureInfo.InvariantCulture); break;
        case "--client": options.Mode = VhostUserSocketMode.Client; break;
        case "--print-capabilities": printCapabilities = true; break;
        case "--queue-pairs": queuePairs = int.Parse(Value(), System.Globalization.CultureInfo.InvariantCulture); break;
        case "--log-level": level = Enum.Parse<LogLevel>(Value(), ignoreCase: true); break;
        case "-h" or "--help":
            Console.WriteLine("usage: VhostCompat.Samples.Net (--socket-path PATH [--client] | --fd N | --print-capabilities) [--queue-pairs N] [--log-level LEVEL]");
            return 0;
        default:
            Console.Error.WriteLine($"unknown option {a}");
            return 2;
    }
}

if (queuePairs is < 1 or > 127)
{
    Console.Error.WriteLine("--queue-pairs must be 1..127");
    return 2;
}

using ILoggerFactory loggerFactory = LoggerFactory.Create(b => b
    .SetMinimumLevel(level)
    .AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "HH:mm:ss.fff "; }));
var device = new NetDevice(queuePairs, loggerFactory.CreateLogger("VhostCompat.Samples.Net"));

if (printCapabilities)
{
    Console.WriteLine(CapabilityDocument.Render(device, options));
    return 0;
}

try
{
    options.Validate();
}
catch (ArgumentException ex)
{
    Console.Error.WriteLine(ex.Message);
    return 2;
}

using var stop = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) => { e.Cancel = true; stop.Cancel(); };
using var sigterm = System.Runtime.InteropServices.PosixSignalRegistration.Create(
    System.Runtime.InteropServices.PosixSignal.SIGTERM, ctx => { ctx.Cancel = true; stop.Cancel(); });

var backend = new VhostUserBackend(device, options, loggerFactory);
await backend.RunAsync(stop.Token);
return 0;
