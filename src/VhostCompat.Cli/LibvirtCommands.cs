using System.CommandLine;
using System.Globalization;
using VhostCompat.Compat;

namespace VhostCompat.Cli;

/// <summary><c>libvirt annotate</c> and <c>libvirt hook</c>: the profile travels with the domain; a qemu.d hook checks it.</summary>
internal static class LibvirtCommands
{
    /// <summary>The <c>libvirt</c> command with its subcommands.</summary>
    public static Command Build(CliIo io)
    {
        var caps = new Option<string?>("--caps") { Description = "The backend's capability document: the profile is its catalog's latest, or --profile" };
        var profile = new Option<string?>("--profile") { Description = "With --caps: the profile to pin (an id of its catalog or a value list)" };
        var record = new Option<string?>("--record") { Description = "The device's acked-state record: its profile and key" };
        var device = new Option<string?>("--device") { Description = "Annotate only this device: a MAC, a disk target, a socket path or an alias" };
        var key = new Option<string?>("--key") { Description = "The record key (default: the record's, else the SDK's default key of the socket path)" };
        var file = new Argument<string>("domain-xml") { Description = "Domain XML file, or - for stdin", DefaultValueFactory = _ => "-" };
        var annotate = new Command("annotate", "Writes each vhost-user device's pinned profile and record key into the domain's <metadata>; prints the whole XML.\n\nExamples:\n  virsh dumpxml vm1 | vhost-compat libvirt annotate --caps caps.json --profile org.vhostcompat.net.v2 - > vm1.xml && virsh define vm1.xml\n  vhost-compat libvirt annotate --record /var/lib/vnet/state/vm1.net0.json --device 52:54:00:12:34:56 vm1.xml")
        {
            caps, profile, record, device, key, file,
        };
        annotate.SetAction(r => Annotate(io, r.GetValue(file)!, r.GetValue(caps), r.GetValue(profile), r.GetValue(record), r.GetValue(device), r.GetValue(key)));

        var capsDir = new Option<string?>("--caps-dir") { Description = "Directory of destination capability documents: KEY.json for a device, else net.json / block.json" };
        var noProbe = new Option<bool>("--no-probe") { Description = "Do not probe the backends' sockets (migrate: check --caps-dir only; prepare/start: nothing to check)" };
        var timeout = new Option<double>("--timeout") { Description = "Seconds to wait for each reply of a probed backend", DefaultValueFactory = _ => 3 };
        var deadline = new Option<double>("--deadline") { Description = "Seconds the whole hook may take; past it the hook refuses (exit 2)", DefaultValueFactory = _ => 20 };
        var maxAge = new Option<double?>("--caps-max-age") { Description = "Refuse capability documents older than this many seconds (stale)" };
        var allowUnannotated = new Option<bool>("--allow-unannotated") { Description = "migrate: let vhost-user devices without VhostCompat metadata through (default: refuse)" };
        var domainXml = new Option<string?>("--domain-xml") { Description = "Read the domain XML from this file instead of stdin (manual runs)" };
        var verbose = new Option<bool>("--verbose") { Description = "Also log warnings and what was checked (stderr)" };
        var hookArgs = new Argument<string[]>("libvirt-arguments") { Description = "What libvirt passes: DOMAIN OPERATION SUB-OPERATION EXTRA", Arity = ArgumentArity.ZeroOrMore };
        var hook = new Command("hook", "A libvirt qemu hook (install a script calling it in /etc/libvirt/hooks/qemu.d/): 'migrate begin' checks the local backends against the profiles in the domain's metadata, 'prepare begin'/'start begin' that they are pinned to them. Prints nothing; exit 0 ok, 1 incompatible/not pinned, 2 cannot check; one line per problem on stderr.\n\nExample (/etc/libvirt/hooks/qemu.d/50-vhostcompat):\n  #!/bin/sh\n  exec /usr/bin/dotnet /opt/vhost-compat/vhost-compat.dll libvirt hook --caps-dir /etc/vhostcompat/caps \"$@\"")
        {
            capsDir, noProbe, timeout, deadline, maxAge, allowUnannotated, domainXml, verbose, hookArgs,
        };
        hook.SetAction((r, ct) => LibvirtHook.RunAsync(
            io,
            new LibvirtHookOptions(r.GetValue(capsDir), !r.GetValue(noProbe), Seconds("--timeout", r.GetValue(timeout)), Seconds("--deadline", r.GetValue(deadline)),
                r.GetValue(maxAge) is { } age ? Seconds("--caps-max-age", age, 1e9) : null, r.GetValue(allowUnannotated), r.GetValue(domainXml), r.GetValue(verbose)),
            r.GetValue(hookArgs) ?? [],
            ct));

        return new Command("libvirt", "libvirt integration: domain metadata and a qemu.d hook") { annotate, hook };
    }

    public static int Annotate(CliIo io, string path, string? capsPath, string? profileText, string? recordPath, string? selector, string? key)
    {
        if ((capsPath is null) == (recordPath is null))
        {
            throw new CliException("give exactly one of --caps FILE (with optional --profile) or --record FILE");
        }

        if (profileText is not null && capsPath is null)
        {
            throw new CliException("--profile needs --caps (a record carries its own profile)");
        }

        var doc = LibvirtDomainXml.Load(LibvirtDomainXml.ReadInput(path, Console.OpenStandardInput), CliSupport.Label(path));
        var record = recordPath is null ? null : AckedStateRecord.Parse(CliSupport.ReadInput(recordPath), CliSupport.Label(recordPath));
        InterfaceProfile profile;
        if (record is not null)
        {
            profile = record.Profile ?? throw new CliException($"{recordPath}: the record names no profile; annotate from the backend's --caps with --profile instead");
            key ??= record.Key;
        }
        else
        {
            var backend = CliSupport.LoadCaps(capsPath!);
            profile = profileText is null
                ? backend.Catalog?.Latest ?? throw new CliException($"{capsPath}: no profile catalog; give --profile with a value list")
                : ProfileCommands.Resolve(profileText, CapabilityDocument.TypeName(backend.DeviceType), capsPath);
        }

        if (key is not null && !AckedStateStore.IsValidKey(key))
        {
            throw new CliException($"--key '{key}' is not a valid record key");
        }

        var devices = LibvirtDomainXml.Devices(doc);
        var chosen = devices.Where(d => d.Type == profile.DeviceType && (selector is null || d.IsSelectedBy(selector))).ToList();
        string typeName = CapabilityDocument.TypeName(profile.DeviceType);
        if (chosen.Count == 0)
        {
            throw new CliException(selector is null
                ? $"the domain has no vhost-user {(profile.DeviceType == Virtio.VirtioDeviceType.Block ? "disk" : "interface")} for a {typeName} profile ({devices.Count} vhost-user device(s) in all)"
                : $"no vhost-user {typeName} device matches --device {selector}");
        }

        if (chosen.Count > 1 && (record is not null || key is not null))
        {
            throw new CliException($"{chosen.Count} vhost-user {typeName} devices; a record key names one: give --device (one of {string.Join(", ", chosen.Select(d => d.Mac ?? d.Target ?? d.Socket))})");
        }

        var entries = LibvirtDomainXml.Annotations(doc).ToList();
        foreach (var d in chosen)
        {
            string k = key ?? (d.Socket is not null ? AckedStateStore.DefaultKey(d.Socket) : throw new CliException($"{d.Label}: no socket path in the XML; give --key"));
            var entry = new DeviceAnnotation(d.Kind, d.Mac, d.Target, d.Socket, k, profile);
            int at = entries.FindIndex(d.Matches);
            if (at >= 0)
            {
                entries[at] = entry;
            }
            else
            {
                entries.Add(entry);
            }
        }

        // Domain order, then entries for devices the XML no longer has (kept: the rest of the document is not ours to prune).
        var ordered = devices.Select(d => entries.FirstOrDefault(d.Matches)).OfType<DeviceAnnotation>().Distinct().ToList();
        ordered.AddRange(entries.Where(e => !ordered.Contains(e)));
        LibvirtDomainXml.SetAnnotations(doc, ordered);
        io.Out.Write(LibvirtDomainXml.Save(doc));
        return ExitCodes.Ok;
    }

    private static TimeSpan Seconds(string option, double s, double max = 3600) =>
        s > 0 && s <= max ? TimeSpan.FromSeconds(s) : throw new CliException($"{option} {s.ToString(CultureInfo.InvariantCulture)} outside (0, {max.ToString(CultureInfo.InvariantCulture)}] seconds");
}
