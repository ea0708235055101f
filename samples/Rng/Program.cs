using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using VhostCompat.Backend;
using VhostCompat.Compat;
using VhostCompat.Samples.Rng;

// A vhost-user-rng backend on the .NET generic host. QEMU's backend-program conventions:
//   --socket-path PATH    listen on PATH (with --client: connect to it)
//   --fd N                serve the inherited socket fd N (connected or listening)
//   --print-capabilities  print the capability document and exit
//   --compat-profile P    pin the guest-visible interface;  --state-dir DIR  keep acked-state records there
//   --log-level LEVEL     Trace|Debug|Information|Warning|Error (default Information)
// SIGTERM or Ctrl+C stops it gracefully: rings stopped, connection closed, socket file removed.
var options = new VhostUserBackendOptions();
bool printCapabilities = false;
LogLevel level = LogLevel.Information;
for (int i = 0; i < args.Length; i++)
{
    string Value() => ++i < args.Length ? args[i] : throw new ArgumentException($"{args[i - 1]} needs a value");
    switch (args[i])
    {
        case "--socket-path": options.SocketPath = Value(); break;
        case "--fd": options.InheritedFd = int.Parse(Value(), System.Globalization.CultureInfo.InvariantCulture); break;
        case "--client": options.Mode = VhostUserSocketMode.Client; break;
        case "--print-capabilities": printCapabilities = true; break;
        case "--compat-profile": options.CompatProfile = Value(); break;
        case "--state-dir": options.StateDirectory = Value(); break;
        case "--log-level": level = Enum.Parse<LogLevel>(Value(), ignoreCase: true); break;
        default:
            Console.Error.WriteLine($"unknown option {args[i]}; usage: (--socket-path PATH [--client] | --fd N | --print-capabilities) [--compat-profile P] [--state-dir DIR] [--log-level LEVEL]");
            return 2;
    }
}

if (printCapabilities)
{
    Console.WriteLine(CapabilityDocument.Render(new RngDevice(), new VhostUserBackendOptions { SocketPath = "-" }));
    return 0;
}

HostApplicationBuilder builder = Host.CreateApplicationBuilder();
builder.Logging.ClearProviders().SetMinimumLevel(level)
    .AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "HH:mm:ss.fff "; });
builder.Services.AddVhostUserBackend<RngDevice>(o =>
{
    o.SocketPath = options.SocketPath;
    o.InheritedFd = options.InheritedFd;
    o.Mode = options.Mode;
    o.CompatProfile = options.CompatProfile;
    o.StateDirectory = options.StateDirectory;
});

try
{
    await builder.Build().RunAsync();
    return 0;
}
catch (Exception ex) when (ex is Microsoft.Extensions.Options.OptionsValidationException or ArgumentException or FormatException or IOException or CompatibilityException or AckedStateCorruptException)
{
    // Bad options, a profile this build cannot offer, a record it cannot honour, a socket a live backend serves.
    Console.Error.WriteLine(ex.Message);
    return 3;
}
