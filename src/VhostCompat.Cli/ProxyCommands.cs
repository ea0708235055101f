using System.CommandLine;
using Microsoft.Extensions.Logging;
using VhostCompat.Compat;
using VhostCompat.Proxy;

namespace VhostCompat.Cli;

/// <summary><c>proxy</c> and <c>trace</c>: a <see cref="VhostUserProxy"/> in front of any vhost-user backend.</summary>
internal static class ProxyCommands
{
    public static IEnumerable<Command> Build(CliIo io, Option<bool> json)
    {
        var listen = new Option<string?>("--listen") { Description = "Listen here for the frontend (QEMU -chardev socket,path=PATH,reconnect=1)" };
        var connect = new Option<string?>("--connect") { Description = "Connect to a frontend listening here (QEMU -chardev socket,path=PATH,server=on)" };
        var backend = new Option<string?>("--backend") { Description = "The backend listens here (DPDK iface=PATH, qemu-storage-daemon addr.path=PATH)" };
        var backendListen = new Option<string?>("--backend-listen") { Description = "Listen here for a backend that connects (DPDK client=1)" };
        var type = new Option<string>("--type", "-t") { Description = "Device type: net or block", DefaultValueFactory = _ => "net" };
        type.AcceptOnlyFromAmong("net", "block", "blk");
        var profile = new Option<string?>("--compat-profile") { Description = "Pin the interface: a profile id of --catalog or a value list" };
        var catalog = new Option<string?>("--catalog") { Description = "The backend's profile catalog: a catalog file, a capability document holding one, or a catalog shipped with the tool (dpdk-net, qemu-storage-daemon-blk)" };
        var stateDir = new Option<string?>("--state-dir") { Description = "Directory of acked-state records (written on DRIVER_OK, checked at every backend restart)" };
        var stateKey = new Option<string?>("--state-key") { Description = "Record key (default: derived from the frontend socket path)" };
        var trace = new Option<string?>("--trace") { Description = "Write every message decoded to this file (- = stdout)" };
        var traceJson = new Option<bool>("--trace-json") { Description = "Trace as JSON lines" };
        var sealedMemory = new Option<bool>("--require-sealed-memory") { Description = "Refuse guest memory that cannot be sealed against shrinking" };
        var printCaps = new Option<bool>("--print-capabilities") { Description = "Probe the backend and print the capability document the frontend would see through the proxy, then exit" };
        var socketMode = new Option<string?>("--socket-mode") { Description = "Permissions of the sockets the proxy listens on, octal (e.g. 0660 with --socket-group for a QEMU run by libvirt)" };
        var socketGroup = new Option<string?>("--socket-group") { Description = "Group of the sockets the proxy listens on: a name from /etc/group or a numeric gid" };
        var verbose = new Option<bool>("--verbose", "-v") { Description = "Log every request (debug level)" };
        var proxy = new Command("proxy", "Runs a vhost-user proxy in front of a backend not built on the SDK: transparent forwarding (fds untouched, no data through the proxy), "
            + "pinning to a profile, acked-state records with a check at every backend restart, and a validating shield. Runs until SIGTERM.\n\nExamples:\n"
            + "  vhost-compat proxy --listen /run/vm1/net0.sock --backend /run/dpdk/vhost0.sock --state-dir /var/lib/vhostcompat\n"
            + "  vhost-compat proxy --listen /run/vm1/net0.sock --backend /run/dpdk/vhost0.sock --catalog dpdk-net.json --compat-profile org.dpdk.v22.11\n"
            + "  vhost-compat proxy --listen /run/vm1/net0.sock --backend /run/dpdk/vhost0.sock --catalog dpdk-net.json --print-capabilities")
        {
            listen, connect, backend, backendListen, type, profile, catalog, stateDir, stateKey, trace, traceJson, sealedMemory, socketMode, socketGroup, printCaps, verbose,
        };
        proxy.SetAction((r, ct) =>
        {
            var options = Options(r.GetValue(listen), r.GetValue(connect), r.GetValue(backend), r.GetValue(backendListen), r.GetValue(type)!, r.GetValue(profile), r.GetValue(catalog),
                r.GetValue(stateDir), r.GetValue(stateKey), r.GetValue(sealedMemory), requireFrontend: !r.GetValue(printCaps));
            options.SocketMode = r.GetValue(socketMode) is { } m ? ParseMode(m) : null;
            options.SocketGroup = r.GetValue(socketGroup);
            return r.GetValue(printCaps)
                ? PrintCapabilitiesAsync(io, options, ct)
                : RunAsync(io, options, r.GetValue(trace), r.GetValue(traceJson), r.GetValue(verbose), ct);
        });

        var traceListen = new Option<string>("--listen") { Description = "Listen here for the frontend", Required = true };
        var traceBackend = new Option<string>("--backend") { Description = "The backend listens here", Required = true };
        var traceCommand = new Command("trace", "Sits between a frontend and a backend and prints every message decoded (direction, request, flags, payload fields, fds by type, replies matched to requests).\n\n"
            + "Example:\n  vhost-compat trace --listen /tmp/trace.sock --backend /run/dpdk/vhost0.sock --json > session.jsonl")
        {
            traceListen, traceBackend, type,
        };
        traceCommand.SetAction((r, ct) => RunAsync(io,
            Options(r.GetValue(traceListen), null, r.GetValue(traceBackend), null, r.GetValue(type)!, null, null, null, null, false, requireFrontend: true),
            "-", r.GetValue(json), false, ct));
        return [proxy, traceCommand];
    }

    private static UnixFileMode ParseMode(string text) =>
        text.Length is > 0 and <= 4 && text.All(c => c is >= '0' and <= '7') && System.Convert.ToInt32(text, 8) <= 0x1FF
            ? (UnixFileMode)System.Convert.ToInt32(text, 8)
            : throw new CliException($"--socket-mode: '{text}' is not an octal mode 0..0777");

    private static VhostUserProxyOptions Options(string? listen, string? connect, string? backend, string? backendListen, string type, string? profile, string? catalogPath,
        string? stateDir, string? stateKey, bool sealedMemory, bool requireFrontend)
    {
        if (requireFrontend && (listen is null) == (connect is null))
        {
            throw new CliException("give exactly one of --listen PATH and --connect PATH (the frontend side)");
        }

        if ((backend is null) == (backendListen is null))
        {
            throw new CliException("give exactly one of --backend PATH and --backend-listen PATH");
        }

        var deviceType = CliSupport.ParseType(type);
        ProfileCatalog? catalog = catalogPath is null ? null : LoadCatalog(catalogPath);
        if (catalog is not null && catalog.DeviceType != deviceType)
        {
            throw new CliException($"{catalogPath} is a catalog for {CapabilityDocument.TypeName(catalog.DeviceType)}, not {type}");
        }

        if (profile is not null && catalog is null && !InterfaceProfile.IsValueList(profile))
        {
            throw new CliException($"--compat-profile '{profile}' is an id: give --catalog to resolve it, or a value list");
        }

        if (profile is not null)
        {
            _ = catalog?.Resolve(profile) ?? InterfaceProfile.Parse(profile, deviceType); // Fail now, with the parser's words.
        }

        return new VhostUserProxyOptions
        {
            ListenPath = listen,
            FrontendPath = connect,
            BackendPath = backend,
            BackendListenPath = backendListen,
            DeviceType = deviceType,
            CompatProfile = profile,
            Catalog = catalog,
            StateDirectory = stateDir,
            StateKey = stateKey,
            RequireSealedMemory = sealedMemory,
        };
    }

    // A catalog file (vhostcompat-catalog), a capability document holding a catalog, or the name of a catalog shipped with the tool (dpdk-net, qemu-storage-daemon-blk).
    private static ProfileCatalog LoadCatalog(string path)
    {
        string shipped = Path.Combine(AppContext.BaseDirectory, "catalogs", path + ".json");
        if (!File.Exists(path) && !path.Contains('/', StringComparison.Ordinal) && File.Exists(shipped))
        {
            path = shipped;
        }

        if (File.ReadAllText(path).Contains("\"vhostcompat-catalog\"", StringComparison.Ordinal))
        {
            return ProfileCatalogFile.Load(path);
        }

        var caps = CapabilityDocument.Load(path);
        return caps.Catalog ?? throw new CliException($"{path} holds no profile catalog");
    }

    private static async Task<int> PrintCapabilitiesAsync(CliIo io, VhostUserProxyOptions options, CancellationToken ct)
    {
        if (options.BackendPath is null)
        {
            throw new CliException("--print-capabilities needs --backend PATH (a listening backend to probe)");
        }

        var caps = await VhostUserProxy.ProbeAsync(options, ct).ConfigureAwait(false);
        await io.Out.WriteLineAsync(CapabilityDocument.Render(caps)).ConfigureAwait(false);
        return ExitCodes.Ok;
    }

    private static async Task<int> RunAsync(CliIo io, VhostUserProxyOptions options, string? tracePath, bool traceJson, bool verbose, CancellationToken ct)
    {
        TextWriter? traceWriter = tracePath switch
        {
            null => null,
            "-" => io.Out,
            _ => new StreamWriter(tracePath, append: false) { AutoFlush = true },
        };
        options.Trace = traceWriter;
        options.TraceJson = traceJson;
        using var logs = new StderrLoggerProvider(io.Err, verbose ? LogLevel.Debug : LogLevel.Information);
        using var factory = new SingleProviderLoggerFactory(logs);
        VhostUserProxy proxy;
        try
        {
            proxy = new VhostUserProxy(options, factory);
        }
        catch (ArgumentException ex)
        {
            throw new CliException(ex.Message);
        }

        try
        {
            await proxy.RunAsync(ct).ConfigureAwait(false);
        }
        catch (System.Net.Sockets.SocketException ex)
        {
            throw new CliException($"{options.ListenPath ?? options.BackendListenPath}: {ex.Message}");
        }
        finally
        {
            if (traceWriter is not null && !ReferenceEquals(traceWriter, io.Out))
            {
                await traceWriter.DisposeAsync().ConfigureAwait(false);
            }
        }

        return ExitCodes.Ok;
    }
}
