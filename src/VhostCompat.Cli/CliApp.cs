using System.CommandLine;
using System.Globalization;
using VhostCompat.Compat;

namespace VhostCompat.Cli;

/// <summary>The <c>vhost-compat</c> command tree (System.CommandLine 2.0).</summary>
internal static class CliApp
{
    /// <summary>Parses and runs a command line, printing to the given writers. Returns 0 (ok), 1 (no / incompatible) or 2 (error).</summary>
    public static async Task<int> RunAsync(string[] args, TextWriter output, TextWriter error, CancellationToken cancellationToken = default)
    {
        var io = new CliIo(output, error);
        var root = Build(io);
        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            foreach (var e in parse.Errors)
            {
                await error.WriteLineAsync($"vhost-compat: {e.Message}").ConfigureAwait(false);
            }

            await error.WriteLineAsync("run 'vhost-compat --help' for usage").ConfigureAwait(false);
            return ExitCodes.Error;
        }

        var config = new InvocationConfiguration { Output = output, Error = error, EnableDefaultExceptionHandler = false };
        string? failure;
        try
        {
            return await parse.InvokeAsync(config, cancellationToken).ConfigureAwait(false);
        }
        catch (CliException ex)
        {
            failure = ex.Message;
        }
        catch (CompatDocumentException ex)
        {
            failure = ex.Message;
        }
        catch (ProfileFormatException ex)
        {
            failure = "invalid profile: " + ex.Message;
        }
        catch (IOException ex)
        {
            failure = ex.Message;
        }
        catch (UnauthorizedAccessException ex)
        {
            failure = ex.Message;
        }

        failure = OneLine(failure);
        await error.WriteLineAsync($"vhost-compat: {failure}").ConfigureAwait(false);
        if (args.Contains("--json", StringComparer.Ordinal))
        {
            // Callers parsing stdout as JSON get a document for failures too.
            await output.WriteLineAsync(CliSupport.Json(w =>
            {
                w.WriteStartObject();
                w.WriteString("error", failure);
                w.WriteNumber("exit-code", ExitCodes.Error);
                w.WriteEndObject();
            })).ConfigureAwait(false);
        }

        return ExitCodes.Error;
    }

    private static RootCommand Build(CliIo io)
    {
        var json = new Option<bool>("--json") { Description = "Print JSON instead of text", Recursive = true };
        var type = new Option<string>("--type", "-t") { Description = "Device type: net, block, rng, scsi, fs, vsock, input, gpu, sound, i2c, gpio, scmi, crypto, console", DefaultValueFactory = _ => "net" };
        type.AcceptOnlyFromAmong(CliSupport.TypeNames);
        var optionalType = new Option<string?>("--type", "-t") { Description = "Device type (net, block, rng, input, ...) when a value list has no type= key" };
        optionalType.AcceptOnlyFromAmong(CliSupport.TypeNames);
        var protocol = new Option<bool>("--protocol", "-p") { Description = "The value is a vhost-user protocol feature mask, not virtio features" };
        var caps = new Option<string?>("--caps") { Description = "A capability document (--print-capabilities output) whose catalog resolves profile ids" };
        var timeout = new Option<double>("--timeout") { Description = "Seconds to wait for each reply from a socket", DefaultValueFactory = _ => 5 };

        var root = new RootCommand(
            "Interface compatibility for vhost-user backends: features, profiles, catalogs, capability documents, preflight checks.\n"
            + "Exit codes: 0 ok/compatible, 1 negative answer (incompatible, different, lock violated), 2 error.")
        {
            json,
        };

        // features decode|encode
        var decodeValue = new Argument<string>("value") { Description = "Feature mask: 0x-prefixed hex or decimal" };
        var decode = new Command("decode", "Names the bits of a feature mask.\n\nExamples:\n  vhost-compat features decode 0x170008000\n  vhost-compat features decode --type block 0x100001244\n  vhost-compat features decode --protocol 0x1a009")
        {
            type, protocol, decodeValue,
        };
        decode.SetAction(r => FeatureCommands.Decode(io, r.GetValue(type)!, r.GetValue(decodeValue)!, r.GetValue(protocol), r.GetValue(json)));
        var encodeNames = new Argument<string>("names") { Description = "Comma-separated feature names (canonical, aliases or bitN)" };
        var encode = new Command("encode", "Turns feature names into a mask.\n\nExamples:\n  vhost-compat features encode mrg_rxbuf,version_1,event_idx\n  vhost-compat features encode --protocol mq,reply_ack,status")
        {
            type, protocol, encodeNames,
        };
        encode.SetAction(r => FeatureCommands.Encode(io, r.GetValue(type)!, r.GetValue(encodeNames)!, r.GetValue(protocol), r.GetValue(json)));
        root.Add(new Command("features", "Decode and encode virtio / protocol feature masks") { decode, encode });

        // profile parse|format|diff
        var profileText = new Argument<string>("profile") { Description = "A value list (type=net,mrg_rxbuf=on,...) or a profile id (with --caps)" };
        var parse = new Command("parse", "Validates a profile and lists every key.\n\nExamples:\n  vhost-compat profile parse type=net,any_layout=on,max_ring=256,mrg_rxbuf=off\n  vhost-compat profile parse --caps caps.json org.example.vnet.v2")
        {
            optionalType, caps, profileText,
        };
        parse.SetAction(r => ProfileCommands.Parse(io, r.GetValue(profileText)!, r.GetValue(optionalType), r.GetValue(caps), r.GetValue(json)));
        var format = new Command("format", "Prints a profile's canonical value list (equal profiles give equal strings).\n\nExample:\n  vhost-compat profile format mrg_rxbuf=on,type=net")
        {
            optionalType, caps, profileText,
        };
        format.SetAction(r => ProfileCommands.Format(io, r.GetValue(profileText)!, r.GetValue(optionalType), r.GetValue(caps), r.GetValue(json)));
        var diffA = new Argument<string>("a") { Description = "First profile (value list or id)" };
        var diffB = new Argument<string>("b") { Description = "Second profile (value list or id)" };
        var diff = new Command("diff", "Lists the keys whose values differ; exit 1 when they differ.\n\nExample:\n  vhost-compat profile diff --caps caps.json org.example.vnet.v1 org.example.vnet.v2")
        {
            optionalType, caps, diffA, diffB,
        };
        diff.SetAction(r => ProfileCommands.Diff(io, r.GetValue(diffA)!, r.GetValue(diffB)!, r.GetValue(optionalType), r.GetValue(caps), r.GetValue(json)));
        root.Add(new Command("profile", "Parse, format and compare interface profiles") { parse, format, diff, BaselineCommands.Build(io, json) });

        // catalog verify
        var requiredCaps = new Option<string>("--caps") { Description = "The backend's capability document (holds its catalog)", Required = true };
        var lockFile = new Option<string>("--lock") { Description = "The lock file", DefaultValueFactory = _ => "profiles.lock.json" };
        var update = new Option<bool>("--update") { Description = "Write the lock (created, or grown by new profiles) when nothing published was removed or changed" };
        var verify = new Command("verify", "Checks that a catalog only grew since its lock file and fits the backend's capability.\n\nExamples:\n  mybackend --print-capabilities > caps.json\n  vhost-compat catalog verify --caps caps.json --lock profiles.lock.json\n  vhost-compat catalog verify --caps caps.json --update")
        {
            requiredCaps, lockFile, update,
        };
        verify.SetAction(r => DocumentCommands.CatalogVerify(io, r.GetValue(requiredCaps)!, r.GetValue(lockFile)!, r.GetValue(update), r.GetValue(json)));
        var catalogCommand = new Command("catalog", "Profile catalogs: lock files, catalog files of real backends") { verify };
        CatalogCommands.AddTo(catalogCommand, io, json, timeout);
        root.Add(catalogCommand);

        // caps validate
        var capsFile = new Argument<string>("file") { Description = "Capability document, or - for stdin" };
        var validate = new Command("validate", "Validates a capability document strictly.\n\nExample:\n  mybackend --print-capabilities | vhost-compat caps validate -")
        {
            capsFile,
        };
        validate.SetAction(r => DocumentCommands.CapsValidate(io, r.GetValue(capsFile)!, r.GetValue(json)));
        root.Add(new Command("caps", "Capability documents") { validate });

        // record show
        var recordFile = new Argument<string>("file") { Description = "Acked-state record file" };
        var show = new Command("show", "Shows an acked-state record after checking its version and checksum.\n\nExample:\n  vhost-compat record show /var/lib/mybackend/vm-1234.net0.json")
        {
            recordFile,
        };
        show.SetAction(r => DocumentCommands.RecordShow(io, r.GetValue(recordFile)!, r.GetValue(json)));
        root.Add(new Command("record", "Acked-state records") { show });

        // check
        var record = new Option<string?>("--record") { Description = "The source VM's acked-state record" };
        var profile = new Option<string?>("--profile") { Description = "The source VM's profile: an id or a value list" };
        var sourceCaps = new Option<string?>("--source-caps") { Description = "The source backend's capability document, to resolve a profile id by its values" };
        var dstCaps = new Option<string?>("--caps") { Description = "The destination's capability document" };
        var socket = new Option<string?>("--socket") { Description = "The destination backend's socket (probed live)" };
        var vmFrontend = new Option<string?>("--vm-frontend") { Description = "The VM's frontend document (vhost-compat frontend --qmp): replaces the record's" };
        var dstFrontend = new Option<string?>("--frontend") { Description = "The destination host's frontend document (vhost-compat frontend --qemu): replaces the capability document's" };
        var check = new Command("check", "Preflight: can the destination carry the VM? Exit 0 compatible, 1 incompatible, 2 error.\n\nExamples:\n  vhost-compat check --record vm-1234.net0.json --caps dst-caps.json\n  vhost-compat check --profile org.example.vnet.v2 --socket /run/dst/vnet.sock --json\n  vhost-compat check --record r.json --vm-frontend vm.json --caps dst-caps.json --frontend dst-qemu.json")
        {
            record, profile, optionalType, sourceCaps, dstCaps, socket, timeout, vmFrontend, dstFrontend,
        };
        check.SetAction((r, ct) => CheckCommands.CheckAsync(io, new CheckInputs(r.GetValue(record), r.GetValue(profile), r.GetValue(optionalType), r.GetValue(sourceCaps), r.GetValue(dstCaps), r.GetValue(socket), r.GetValue(vmFrontend), r.GetValue(dstFrontend)), Seconds(r.GetValue(timeout)), r.GetValue(json), ct));
        root.Add(check);

        // frontend
        var qmpSocket = new Option<string?>("--qmp") { Description = "A running VM's QMP socket: its version, machine type and the machine types of its binary" };
        var qemuBinary = new Option<string?>("--qemu") { Description = "A hypervisor binary (started with -machine none -S -qmp stdio only to be asked): version and machine types" };
        var qemuArg = new Option<string[]>("--qemu-arg") { Description = "An extra argument for --qemu (repeat), e.g. -L DIR", AllowMultipleArgumentsPerToken = false, DefaultValueFactory = _ => [] };
        var machine = new Option<string?>("--machine") { Description = "The VM's machine type (e.g. pc-q35-7.2), when not read from --qmp" };
        var intoRecord = new Option<string?>("--record") { Description = "Print this acked-state record with the frontend embedded (the VM's side)" };
        var intoCaps = new Option<string?>("--caps") { Description = "Print this capability document with the frontend embedded (the destination host's side)" };
        var frontendTimeout = new Option<double>("--timeout") { Description = "Seconds to wait for QMP", DefaultValueFactory = _ => 30 };
        var frontend = new Command("frontend", "Reads the frontend side of a VM's interface over QMP and prints a frontend document, or a record / capability document with it embedded.\n\nExamples:\n  vhost-compat frontend --qmp /run/vm-1234.qmp --record vm-1234.net0.json > vm-1234.net0.frontend.json\n  vhost-compat frontend --qemu /usr/bin/qemu-system-x86_64 --caps dst-caps.json > dst-caps-with-frontend.json")
        {
            qmpSocket, qemuBinary, qemuArg, machine, intoRecord, intoCaps, frontendTimeout,
        };
        frontend.SetAction((r, ct) => FrontendCommands.RunAsync(io, r.GetValue(qmpSocket), r.GetValue(qemuBinary), r.GetValue(qemuArg) ?? [], r.GetValue(machine), r.GetValue(intoRecord), r.GetValue(intoCaps), Seconds(r.GetValue(frontendTimeout)), ct));
        root.Add(frontend);

        // probe
        var probeSocket = new Argument<string>("socket") { Description = "The backend's Unix socket" };
        var noRing = new Option<bool>("--no-ring-probe") { Description = "Do not probe the largest ring size with SET_VRING_NUM" };
        var probe = new Command("probe", "Connects as a frontend and reports what a live backend offers (any vhost-user backend, e.g. DPDK's vhost PMD).\n\nExamples:\n  vhost-compat probe /run/vnet.sock\n  vhost-compat probe --type block --json /run/blk.sock > caps.json")
        {
            type, timeout, noRing, probeSocket,
        };
        probe.SetAction((r, ct) => CheckCommands.ProbeCommandAsync(io, r.GetValue(probeSocket)!, r.GetValue(type)!, Seconds(r.GetValue(timeout)), !r.GetValue(noRing), r.GetValue(json), ct));
        root.Add(probe);
        root.Add(LibvirtCommands.Build(io));
        root.Add(PlanCommands.Build(io, json));
        foreach (var command in ProxyCommands.Build(io, json))
        {
            root.Add(command);
        }

        return root;
    }

    /// <summary>A failure message as one line: messages can quote untrusted text (a file's values, a QMP monitor's answers).</summary>
    internal static string OneLine(string message) =>
        message.Any(char.IsControl)
            ? string.Concat(message.Select(c => !char.IsControl(c) ? c.ToString() : c == '\n' ? "\\n" : $"\\u{(int)c:x4}"))
            : message;

    private static TimeSpan Seconds(double s) =>
        s is > 0 and <= 3600 ? TimeSpan.FromSeconds(s) : throw new CliException($"--timeout {s.ToString(CultureInfo.InvariantCulture)} outside (0, 3600] seconds");
}
