using System.Globalization;
using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Cli;

/// <summary>How the hook was installed (the options in its qemu.d script).</summary>
internal sealed record LibvirtHookOptions(string? CapsDir, bool Probe, TimeSpan Timeout, TimeSpan Deadline, TimeSpan? CapsMaxAge, bool AllowUnannotated, string? DomainXml, bool Verbose);

/// <summary>
/// <c>vhost-compat libvirt hook DOMAIN OPERATION SUB-OPERATION EXTRA</c>, run by libvirtd with the domain XML on stdin.
/// <c>migrate begin</c> (on the destination, before anything starts there or pauses on the source): every annotated
/// vhost-user device's profile against the local backend, with the preflight of <c>vhost-compat check</c>.
/// <c>prepare begin</c> and <c>start begin</c>: every annotated device's backend offers exactly its profile (is pinned
/// to it). Every other operation: nothing. Never writes to stdout (libvirt would take it as a replacement XML), never
/// calls libvirt, stops at <see cref="LibvirtHookOptions.Deadline"/>.
/// </summary>
internal static class LibvirtHook
{
    private enum Phase
    {
        None,
        Migrate,
        Pin,
    }

    public static async Task<int> RunAsync(CliIo io, LibvirtHookOptions options, string[] args, CancellationToken cancellationToken)
    {
        if (args.Length != 4)
        {
            throw new CliException($"hook: expected the 4 arguments libvirt passes (DOMAIN OPERATION SUB-OPERATION EXTRA), got {args.Length}");
        }

        string domain = CliApp.OneLine(args[0]);
        var phase = (args[1], args[2]) switch
        {
            ("migrate", "begin") => Phase.Migrate,
            ("prepare", "begin") or ("start", "begin") => Phase.Pin,
            _ => Phase.None,
        };
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        cts.CancelAfter(options.Deadline);
        var problems = new List<(int Code, string Line)>();
        try
        {
            // Read stdin for every operation: libvirt writes the XML whether or not the hook wants it.
            byte[] xml = await Task.Run(() => LibvirtDomainXml.ReadInput(options.DomainXml ?? "-", Console.OpenStandardInput), cts.Token).WaitAsync(cts.Token).ConfigureAwait(false);
            if (phase == Phase.None)
            {
                return ExitCodes.Ok;
            }

            var doc = LibvirtDomainXml.Load(xml, $"domain {domain}");
            var annotations = LibvirtDomainXml.Annotations(doc);
            foreach (var device in LibvirtDomainXml.Devices(doc))
            {
                var entry = annotations.FirstOrDefault(device.Matches);
                string prefix = $"{device.Label}: ";
                if (entry is null)
                {
                    if (phase == Phase.Migrate && !options.AllowUnannotated)
                    {
                        problems.Add((ExitCodes.Error, prefix + "no VhostCompat metadata, so the destination cannot be checked (annotate the domain: vhost-compat libvirt annotate; or install the hook with --allow-unannotated)"));
                    }
                    else if (options.Verbose)
                    {
                        Log(io, domain, prefix + "no VhostCompat metadata; not checked");
                    }

                    continue;
                }

                var found = phase == Phase.Migrate
                    ? await CheckMigrationAsync(io, options, domain, device, entry, cts.Token).ConfigureAwait(false)
                    : await CheckPinAsync(io, options, domain, device, entry, cts.Token).ConfigureAwait(false);
                problems.AddRange(found.Select(p => (p.Code, prefix + p.Line)));
            }
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            problems.Add((ExitCodes.Error, $"gave up after {options.Deadline.TotalSeconds.ToString(CultureInfo.InvariantCulture)} s (--deadline); refusing rather than holding libvirt"));
        }
        catch (CliException ex)
        {
            problems.Add((ExitCodes.Error, ex.Message));
        }

        foreach (var (_, line) in problems)
        {
            Log(io, domain, line);
        }

        return problems.Count == 0 ? ExitCodes.Ok : problems.Max(p => p.Code);
    }

    private static void Log(CliIo io, string domain, string line) => io.Err.WriteLine($"vhost-compat: {domain}: {CliApp.OneLine(line)}");

    private static async Task<List<(int Code, string Line)>> CheckMigrationAsync(CliIo io, LibvirtHookOptions o, string domain, VhostUserDomainDevice device, DeviceAnnotation entry, CancellationToken ct)
    {
        var problems = new List<(int, string)>();
        var destinations = new List<(string What, BackendCapabilities Caps)>();
        if (o.CapsDir is not null)
        {
            try
            {
                destinations.Add(LoadCaps(o, entry));
            }
            catch (Exception ex) when (ex is CliException or CompatDocumentException)
            {
                problems.Add((ExitCodes.Error, ex.Message));
            }
        }

        if (o.Probe)
        {
            if (device.Socket is null)
            {
                problems.Add((ExitCodes.Error, "no socket path in the domain XML"));
            }
            else if (device.QemuIsServer)
            {
                if (o.CapsDir is null)
                {
                    problems.Add((ExitCodes.Error, $"QEMU is the socket server (mode='server') on {device.Socket}: the backend connects to it and cannot be probed; install the hook with --caps-dir"));
                }
            }
            else
            {
                try
                {
                    destinations.Add(($"backend at {device.Socket}", await CheckCommands.ProbeAsync(device.Socket, device.Type, o.Timeout, probeRing: true, ct).ConfigureAwait(false)));
                }
                catch (CliException ex)
                {
                    problems.Add((ExitCodes.Error, "cannot probe the local backend: " + ex.Message));
                }
            }
        }

        foreach (var (what, caps) in destinations)
        {
            var result = PreflightCheck.Check(entry.Profile, null, caps);
            foreach (var f in result.Findings)
            {
                if (f.Severity == PreflightSeverity.Error)
                {
                    problems.Add((ExitCodes.No, $"{f.Code}: {f.Message} ({what})"));
                }
                else if (o.Verbose)
                {
                    Log(io, domain, $"{device.Label}: warning {f.Code}: {f.Message} ({what})");
                }
            }

            if (o.Verbose && result.Compatible)
            {
                Log(io, domain, $"{device.Label}: {entry.Profile.Id ?? "profile"} compatible with {what}");
            }
        }

        return problems;
    }

    private static (string, BackendCapabilities) LoadCaps(LibvirtHookOptions o, DeviceAnnotation entry)
    {
        string typeName = CapabilityDocument.TypeName(entry.Profile.DeviceType);
        string byKey = Path.Combine(o.CapsDir!, entry.Key + ".json");
        string byType = Path.Combine(o.CapsDir!, typeName + ".json");
        string path = File.Exists(byKey) ? byKey : File.Exists(byType) ? byType
            : throw new CliException($"no capability document for key '{entry.Key}' in {o.CapsDir} ({entry.Key}.json or {typeName}.json)");
        if (o.CapsMaxAge is { } maxAge && DateTime.UtcNow - File.GetLastWriteTimeUtc(path) is var age && age > maxAge)
        {
            throw new CliException($"{path} is stale: written {age.TotalSeconds:F0} s ago, more than --caps-max-age {maxAge.TotalSeconds.ToString(CultureInfo.InvariantCulture)} s (rewrite it from the backend's --print-capabilities)");
        }

        var caps = CliSupport.LoadCaps(path);
        return caps.DeviceType != entry.Profile.DeviceType
            ? throw new CliException($"{path} describes a {CapabilityDocument.TypeName(caps.DeviceType)} backend, the device is {typeName}")
            : ($"capability document {path}", caps);
    }

    private static async Task<List<(int Code, string Line)>> CheckPinAsync(CliIo io, LibvirtHookOptions o, string domain, VhostUserDomainDevice device, DeviceAnnotation entry, CancellationToken ct)
    {
        if (!o.Probe || device.QemuIsServer)
        {
            if (o.Verbose)
            {
                Log(io, domain, $"{device.Label}: pin not checked ({(o.Probe ? "QEMU is the socket server" : "--no-probe")})");
            }

            return [];
        }

        if (device.Socket is null)
        {
            return [(ExitCodes.Error, "no socket path in the domain XML")];
        }

        BackendCapabilities caps;
        try
        {
            caps = await CheckCommands.ProbeAsync(device.Socket, device.Type, o.Timeout, probeRing: true, ct).ConfigureAwait(false);
        }
        catch (CliException ex)
        {
            return [(ExitCodes.Error, "cannot probe the backend: " + ex.Message)];
        }

        var differences = PinDifferences(entry.Profile, caps);
        if (differences.Count == 0)
        {
            if (o.Verbose)
            {
                Log(io, domain, $"{device.Label}: backend at {device.Socket} is pinned to {entry.Profile.Id ?? entry.Profile.Canonical}");
            }

            return [];
        }

        return [(ExitCodes.No, $"the backend at {device.Socket} is not pinned to the domain's profile {entry.Profile.Id ?? entry.Profile.Canonical}: {string.Join("; ", differences)} (start it with --compat-profile {entry.Profile.Id ?? entry.Profile.Canonical})")];
    }

    /// <summary>How what a backend offers differs from exactly <paramref name="profile"/> (empty: it is pinned to it).</summary>
    internal static List<string> PinDifferences(InterfaceProfile profile, BackendCapabilities caps)
    {
        var d = new List<string>();
        var type = profile.DeviceType;
        ulong offered = caps.VirtioFeatures & ~VirtioFeatures.VhostOnlyMask;
        if ((offered & ~profile.Features) is var extra and not 0)
        {
            d.Add("offers " + VirtioFeatures.Format(type, extra) + " beyond the profile");
        }

        if ((profile.Features & ~offered) is var missing and not 0)
        {
            d.Add("lacks " + VirtioFeatures.Format(type, missing));
        }

        if (caps.Queues != profile.Queues)
        {
            d.Add($"serves {caps.Queues} virtqueues, the profile {profile.Queues}");
        }

        if (caps.MaxQueueSize != profile.MaxRingSize)
        {
            d.Add($"accepts rings up to {caps.MaxQueueSize}, the profile {profile.MaxRingSize}");
        }

        foreach (var (name, pinned) in new[] { ("mtu", profile.Mtu?.ToString(CultureInfo.InvariantCulture)), ("blk_size", profile.BlockSize?.ToString(CultureInfo.InvariantCulture)), ("capacity", profile.Capacity?.ToString(CultureInfo.InvariantCulture)) })
        {
            if (pinned is not null && caps.Config.TryGetValue(name, out var value) && value != pinned)
            {
                d.Add($"{name} {value}, the profile {pinned}");
            }
        }

        return d;
    }
}
