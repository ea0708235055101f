using System.CommandLine;
using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Cli;

/// <summary>What <see cref="BaselineCommands.Compute"/> found for a set of hosts.</summary>
/// <param name="Baseline">The newest profile every host can carry, or null.</param>
/// <param name="Intersection">The value-list intersection of the hosts' newest profiles (or offers), or null when they cannot meet.</param>
/// <param name="IntersectionCarried">True when every host can carry <see cref="Intersection"/>.</param>
/// <param name="Refusals">For a candidate newer than the baseline: host and reason, for the text output.</param>
internal sealed record BaselineResult(InterfaceProfile? Baseline, InterfaceProfile? Intersection, bool IntersectionCarried, IReadOnlyList<string> Refusals);

/// <summary><c>profile baseline CAPS...</c>: the profile to pin new VMs to in a mixed fleet (like libvirt's CPU baseline).</summary>
internal static class BaselineCommands
{
    public static Command Build(CliIo io, Option<bool> json)
    {
        var files = new Argument<string[]>("caps") { Description = "The capability document of every host (at least one)", Arity = ArgumentArity.OneOrMore };
        var baseline = new Command("baseline", "Prints the newest profile every given host can carry and, where the catalogs differ, the value-list intersection of the hosts' newest profiles. Exit 0 when a published profile fits all, 1 when only the intersection (or nothing) does.\n\nExample:\n  vhost-compat profile baseline host-a.caps.json host-b.caps.json host-c.caps.json")
        {
            files,
        };
        baseline.SetAction(r => Run(io, r.GetValue(files) ?? [], r.GetValue(json)));
        return baseline;
    }

    public static int Run(CliIo io, string[] paths, bool json)
    {
        if (paths.Length == 0)
        {
            throw new CliException("give the capability document of every host");
        }

        var hosts = paths.Select(p => (Name: CliSupport.Label(p), Caps: CliSupport.LoadCaps(p))).ToList();
        var result = Compute(hosts);
        if (json)
        {
            io.Out.WriteLine(CliSupport.Json(w =>
            {
                w.WriteStartObject();
                w.WritePropertyName("baseline");
                if (result.Baseline is null)
                {
                    w.WriteNullValue();
                }
                else
                {
                    CliSupport.WriteProfile(w, result.Baseline);
                }

                w.WritePropertyName("intersection");
                if (result.Intersection is null)
                {
                    w.WriteNullValue();
                }
                else
                {
                    CliSupport.WriteProfile(w, result.Intersection);
                }

                w.WriteBoolean("intersection-carried-by-all", result.IntersectionCarried);
                CliSupport.WriteStrings(w, "hosts", hosts.Select(h => h.Name));
                w.WriteEndObject();
            }));
        }
        else
        {
            io.Out.WriteLine(result.Baseline is { } b ? $"baseline {b.Id ?? b.Canonical}" : "baseline: no published profile fits every host");
            if (result.Baseline?.Id is not null)
            {
                io.Out.WriteLine($"  {result.Baseline.Canonical}");
            }

            foreach (var r in result.Refusals)
            {
                io.Out.WriteLine($"  newer: {r}");
            }

            if (result.Intersection is { } i)
            {
                io.Out.WriteLine($"intersection{(result.IntersectionCarried ? string.Empty : " (not carried by every host)")}: {i.Canonical}");
            }
            else
            {
                io.Out.WriteLine("intersection: none (the hosts' profiles have no common interface)");
            }
        }

        return result.Baseline is not null ? ExitCodes.Ok : ExitCodes.No;
    }

    /// <summary>
    /// Candidates are every host's catalog profiles, newest first (catalog order, later = newer; first host first).
    /// A host carries a profile when the preflight finds no error for it (it need not publish the id: it can be
    /// pinned with the value list). The intersection ANDs the features of each host's newest profile (its catalog's
    /// latest, or what it offers without a catalog) and takes the smallest ring and queue count.
    /// </summary>
    public static BaselineResult Compute(IReadOnlyList<(string Name, BackendCapabilities Caps)> hosts)
    {
        ArgumentNullException.ThrowIfNull(hosts);
        var type = hosts[0].Caps.DeviceType;
        if (hosts.FirstOrDefault(h => h.Caps.DeviceType != type) is { Name: not null } other)
        {
            throw new CliException($"{other.Name} describes a {CapabilityDocument.TypeName(other.Caps.DeviceType)} backend, {hosts[0].Name} a {CapabilityDocument.TypeName(type)} one");
        }

        var candidates = new List<InterfaceProfile>();
        foreach (var (_, caps) in hosts)
        {
            foreach (var p in (caps.Catalog?.Profiles ?? []).Reverse())
            {
                if (!candidates.Any(c => c.Id == p.Id && c.SameInterface(p)))
                {
                    candidates.Add(p);
                }
            }
        }

        var refusals = new List<string>();
        InterfaceProfile? baseline = null;
        foreach (var candidate in candidates)
        {
            var refusing = hosts.Select(h => (h.Name, Error: FirstError(candidate, h.Caps))).Where(x => x.Error is not null).ToList();
            if (refusing.Count == 0)
            {
                baseline = candidate;
                break;
            }

            refusals.Add($"{candidate.Id}: {refusing[0].Name}: {refusing[0].Error}" + (refusing.Count > 1 ? $" (and {refusing.Count - 1} more host(s))" : string.Empty));
        }

        var intersection = Intersect(type, hosts.Select(h => h.Caps.Catalog?.Latest ?? Offer(h.Caps)).ToList());
        bool carried = intersection is not null && hosts.All(h => FirstError(intersection, h.Caps) is null);
        return new BaselineResult(baseline, intersection, carried, refusals);
    }

    private static string? FirstError(InterfaceProfile profile, BackendCapabilities caps) =>
        PreflightCheck.Check(profile, null, caps).Findings.FirstOrDefault(f => f.Severity == PreflightSeverity.Error)?.Message;

    private static InterfaceProfile Offer(BackendCapabilities caps) =>
        new(caps.DeviceType, caps.VirtioFeatures & ~VirtioFeatures.VhostOnlyMask & VirtioFeatures.KnownMask(caps.DeviceType), (ushort)Math.Min(caps.MaxQueueSize, 32768), caps.Queues);

    private static InterfaceProfile? Intersect(VirtioDeviceType type, List<InterfaceProfile> profiles)
    {
        ulong features = profiles.Aggregate(ulong.MaxValue, (a, p) => a & p.Features);
        ushort ring = profiles.Min(p => p.MaxRingSize);
        int queues = profiles.Min(p => p.Queues);
        ushort? mtu = profiles.Select(p => p.Mtu).Distinct().Count() == 1 ? profiles[0].Mtu : null;
        uint? blockSize = profiles.Select(p => p.BlockSize).Distinct().Count() == 1 ? profiles[0].BlockSize : null;
        ulong? capacity = profiles.Select(p => p.Capacity).Distinct().Count() == 1 ? profiles[0].Capacity : null;
        bool? deviceState = profiles.Any(p => p.DeviceState == false) ? false : profiles.All(p => p.DeviceState == true) ? true : null;
        try
        {
            return new InterfaceProfile(type, features, ring, queues, null, mtu, blockSize, capacity, deviceState);
        }
        catch (ProfileFormatException)
        {
            // E.g. a dependency between features broken by the AND (mq without ctrl_vq): no common value list.
            return null;
        }
    }
}
