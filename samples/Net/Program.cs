using Microsoft.Extensions.Logging;
using VhostCompat.Backend;
using VhostCompat.Compat;
using VhostCompat.Samples.Net;

// A vhost-user-net backend: a small L2 learning switch whose ports are vhost-user sockets.
// Follows QEMU's backend-program conventions:
//   --socket-path PATH   one port listening on PATH (repeat for more ports; with --client, connect instead)
//   --fd N               one port on inherited socket fd N (connected or listening)
//   --print-capabilities print the capability document and exit
//   --queue-pairs N      queue pairs per port (default 1)
//   --sink               count and drop every TX frame (benchmark mode)
//   --busy-poll          poll rings continuously instead of waiting for kicks
//   --compat-profile P   pin the guest-visible interface (profile id or value list, e.g. version_1=on,mrg_rxbuf=on)
//   --build N            emulate release N of this sample (catalog v1..vN; default: the latest)
//   --state-dir DIR      save/restore acked-state records there (one per port, key from the socket path)
//   --state-version N    the device-state format written and read on migration (default 1; another N emulates a
//                        build with a foreign format: it reads only N, so a version-1 blob is refused)
//   --responder IP       add an internal host with address IP that answers ARP and ping (ICMP echo)
//   --log-level LEVEL    Trace|Debug|Information|Warning|Error (default Debug: every request is logged)
var paths = new List<string>();
int? inheritedFd = null;
bool client = false, printCapabilities = false, sink = false, busyPoll = false;
string? profile = null, stateDir = null;
Responder? responder = null;
int queuePairs = 1;
int build = NetCatalog.LatestBuild;
uint stateVersion = 1;
LogLevel level = LogLevel.Debug;
string option = string.Empty;
try
{
    for (int i = 0; i < args.Length; i++)
    {
        string a = args[i];
        int eq = a.IndexOf('=', StringComparison.Ordinal);
        string? inline = eq >= 0 ? a[(eq + 1)..] : null;
        string key = eq >= 0 ? a[..eq] : a;
        option = key;
        string Value() => inline ?? (++i < args.Length ? args[i] : throw new ArgumentException("needs a value"));
        switch (key)
        {
            case "--socket-path": paths.Add(Value()); break;
            case "--fd": inheritedFd = int.Parse(Value(), System.Globalization.CultureInfo.InvariantCulture); break;
            case "--client": client = true; break;
            case "--print-capabilities": printCapabilities = true; break;
            case "--queue-pairs": queuePairs = int.Parse(Value(), System.Globalization.CultureInfo.InvariantCulture); break;
            case "--sink": sink = true; break;
            case "--busy-poll": busyPoll = true; break;
            case "--compat-profile": profile = Value(); break;
            case "--state-dir": stateDir = Value(); break;
            case "--build": build = int.Parse(Value(), System.Globalization.CultureInfo.InvariantCulture); break;
            case "--state-version":
                if (!uint.TryParse(Value(), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out stateVersion) || stateVersion == 0)
                {
                    Console.Error.WriteLine("--state-version must be a positive integer");
                    return 2;
                }

                break;
            case "--responder":
                if (!System.Net.IPAddress.TryParse(Value(), out var responderIp) || responderIp.AddressFamily != System.Net.Sockets.AddressFamily.InterNetwork)
                {
                    Console.Error.WriteLine("--responder needs an IPv4 address");
                    return 2;
                }

                responder = new Responder(responderIp);
                break;
            case "--log-level": level = Enum.Parse<LogLevel>(Value(), ignoreCase: true); break;
            case "-h" or "--help":
                Console.WriteLine("usage: VhostCompat.Samples.Net (--socket-path PATH ... [--client] | --fd N | --print-capabilities) [--queue-pairs N] [--compat-profile ID|VALUES] [--state-dir DIR] [--state-version N] [--build N] [--sink] [--busy-poll] [--responder IP] [--log-level LEVEL]");
                return 0;
            default:
                Console.Error.WriteLine($"unknown option {a}");
                return 2;
        }
    }
}
catch (Exception ex) when (ex is FormatException or OverflowException or ArgumentException)
{
    // A value that does not parse (e.g. --build x, --log-level loud) or a missing value: one line, exit 2.
    Console.Error.WriteLine($"{option}: {ex.Message}");
    return 2;
}

if (build is < 1 or > NetCatalog.LatestBuild)
{
    Console.Error.WriteLine($"--build must be 1..{NetCatalog.LatestBuild}");
    return 2;
}

if (queuePairs is < 1 or > 127)
{
    Console.Error.WriteLine("--queue-pairs must be 1..127");
    return 2;
}

using ILoggerFactory loggerFactory = LoggerFactory.Create(b => b
    .SetMinimumLevel(level)
    .AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "HH:mm:ss.fff "; }));
ILogger log = loggerFactory.CreateLogger("VhostCompat.Samples.Net");

int ports = inheritedFd is null ? Math.Max(paths.Count, 1) : 1;
var @switch = new L2Switch(ports, responder);

// One construction for --print-capabilities and serving: the document describes exactly the device that serves.
NetDevice NewDevice(int port) => new(port, @switch, queuePairs, sink, log, build, stateVersion);
if (printCapabilities)
{
    Console.WriteLine(CapabilityDocument.Render(NewDevice(0), new VhostUserBackendOptions { SocketPath = "-" }, NetCatalog.For(build, queuePairs)));
    return 0;
}

if (paths.Count == 0 && inheritedFd is null)
{
    Console.Error.WriteLine("--socket-path or --fd is required");
    return 2;
}

if (responder is not null)
{
    Console.WriteLine($"responder {responder.Address} at {responder.MacText} answers ARP and ping");
}

using var stop = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) => { e.Cancel = true; stop.Cancel(); };
using var sigterm = System.Runtime.InteropServices.PosixSignalRegistration.Create(
    System.Runtime.InteropServices.PosixSignal.SIGTERM, ctx => { ctx.Cancel = true; stop.Cancel(); });

// One worker thread for all ports: the switch writes into other ports' RX queues from a TX handler.
using var workers = new VhostUserWorkerPool(1, busyPoll, loggerFactory);
var runs = new List<Task>();
for (int port = 0; port < ports; port++)
{
    var options = new VhostUserBackendOptions
    {
        SocketPath = inheritedFd is null ? paths[port] : null,
        InheritedFd = inheritedFd,
        Mode = client ? VhostUserSocketMode.Client : VhostUserSocketMode.Server,
        WorkerPool = workers,
        CompatProfile = profile,
        StateDirectory = stateDir,
    };
    try
    {
        options.Validate();
    }
    catch (ArgumentException ex)
    {
        Console.Error.WriteLine(ex.Message);
        return 2;
    }

    var device = NewDevice(port);
    VhostUserBackend backend;
    try
    {
        backend = new VhostUserBackend(device, options, loggerFactory);
        backend.LoadRecord();
    }
    catch (Exception ex) when (ex is FormatException or CompatibilityException or AckedStateCorruptException or ArgumentException)
    {
        // A pin this build cannot offer, or a saved record it can no longer honour: refuse to start
        // (exit 3) with the reason, rather than let the frontend reconnect in a loop.
        Console.Error.WriteLine($"port {port}: {ex.Message}");
        return 3;
    }

    runs.Add(backend.RunAsync(stop.Token));
}

try
{
    await Task.WhenAll(runs);
}
catch (IOException ex)
{
    // e.g. the socket path is served by another live backend
    Console.Error.WriteLine(ex.Message);
    stop.Cancel();
    return 2;
}

for (int port = 0; port < ports; port++)
{
    var s = @switch.Stats[port];
    Console.WriteLine($"port {port}: tx_packets={s.TxPackets} tx_bytes={s.TxBytes} rx_packets={s.RxPackets} rx_dropped={s.RxDropped}");
}

if (responder is not null)
{
    Console.WriteLine($"responder {responder.Address}: arp_replies={responder.ArpReplies} echo_replies={responder.EchoReplies} ignored={responder.Ignored}");
}

return 0;
