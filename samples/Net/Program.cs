using System.CommandLine;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using VhostCompat.Backend;
using VhostCompat.Hosting;
using VhostCompat.Samples.Net;

// A vhost-user-net backend: a small L2 learning switch whose ports are vhost-user sockets (--socket-path repeated:
// one port each). The runner gives it QEMU's backend-program conventions (--socket-path, --client, --fd,
// --print-capabilities, SIGTERM) and --compat-profile, --state-dir (one record per port, key from the socket path),
// --log-level (default Debug: every request is logged); see --help. On a clean stop it prints each port's counters.
L2Switch? @switch = null;
VhostUserWorkerPool? workers = null;
return await VhostUserBackendProgram.RunAsync(args, program =>
{
    program.Description = "vhost-user-net backend: an L2 learning switch with one port per socket";
    program.SeveralSockets = true;
    program.DefaultLogLevel = LogLevel.Debug;
    var queuePairs = program.AddNumber("--queue-pairs", "Queue pairs per port", 1, 1, 127);
    var build = program.AddNumber("--build", "Emulate release N of this sample (catalog v1..vN)", NetCatalog.LatestBuild, 1, NetCatalog.LatestBuild);
    var stateVersion = program.AddOption(new Option<uint>("--state-version")
    {
        Description = "The device-state format written and read on migration (another N emulates a build that refuses version 1)",
        HelpName = "N",
        DefaultValueFactory = _ => 1,
        CustomParser = r => uint.TryParse(r.Tokens[0].Value, NumberStyles.None, CultureInfo.InvariantCulture, out uint v) && v > 0 ? v : Fail<uint>(r, "--state-version must be a positive integer"),
    });
    var responder = program.AddOption(new Option<IPAddress?>("--responder")
    {
        Description = "Add an internal host with this IPv4 address answering ARP and ping",
        HelpName = "IP",
        CustomParser = r => IPAddress.TryParse(r.Tokens[0].Value, out var ip) && ip.AddressFamily == AddressFamily.InterNetwork ? ip : Fail<IPAddress?>(r, "--responder needs an IPv4 address"),
    });
    var sink = program.AddOption(new Option<bool>("--sink") { Description = "Count and drop every TX frame (benchmark mode)" });
    var busyPoll = program.AddOption(new Option<bool>("--busy-poll") { Description = "Poll rings continuously instead of waiting for kicks" });
    program.UseLogging(level => LoggerFactory.Create(b => b.SetMinimumLevel(level).AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "HH:mm:ss.fff "; })));

    // One worker thread for all ports: the switch writes into other ports' RX queues from a TX handler.
    program.OnStarting(c => workers = c.RegisterForDispose(new VhostUserWorkerPool(1, c.GetValue(busyPoll), c.LoggerFactory)));
    program.ConfigureBackend((_, _, o) => o.WorkerPool = workers);
    program.UseDevice((c, port) =>
    {
        if (@switch is null)
        {
            @switch = new L2Switch(c.PortCount, c.GetValue(responder) is { } ip ? new Responder(ip) : null);
            if (!c.PrintCapabilities && @switch.Responder is { } r)
            {
                Console.WriteLine($"responder {r.Address} at {r.MacText} answers ARP and ping");
            }
        }

        var log = c.LoggerFactory.CreateLogger("VhostCompat.Samples.Net");
        return new NetDevice(port, @switch, c.GetValue(queuePairs), c.GetValue(sink), log, c.GetValue(build), c.GetValue(stateVersion));
    });
    program.OnStopped(c =>
    {
        for (int port = 0; port < c.PortCount; port++)
        {
            var s = @switch!.Stats[port];
            Console.WriteLine($"port {port}: tx_packets={s.TxPackets} tx_bytes={s.TxBytes} rx_packets={s.RxPackets} rx_dropped={s.RxDropped}");
        }

        if (@switch!.Responder is { } r)
        {
            Console.WriteLine($"responder {r.Address}: arp_replies={r.ArpReplies} echo_replies={r.EchoReplies} ignored={r.Ignored}");
        }
    });
});

static T Fail<T>(System.CommandLine.Parsing.ArgumentResult result, string message)
{
    result.AddError(message);
    return default!;
}
