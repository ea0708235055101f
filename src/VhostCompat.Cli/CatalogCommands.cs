using System.CommandLine;
using System.Globalization;
using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Cli;

/// <summary><c>catalog add</c> and <c>catalog show</c>: catalog files (<see cref="ProfileCatalogFile"/>) of real backends.</summary>
internal static class CatalogCommands
{
    /// <summary>Adds <c>add</c> and <c>show</c> to the <c>catalog</c> command.</summary>
    public static void AddTo(Command catalog, CliIo io, Option<bool> json, Option<double> timeout)
    {
        var file = new Option<string>("--catalog") { Description = "The catalog file (created when missing)", Required = true };
        var id = new Option<string>("--id") { Description = "The profile id, e.g. org.dpdk.v22.11", Required = true };
        var socket = new Option<string?>("--socket") { Description = "A live backend's socket: probe it" };
        var type = new Option<string?>("--type", "-t") { Description = "Device type of --socket: net or block (default: the catalog's, else net)" };
        type.AcceptOnlyFromAmong(CliSupport.TypeNames);
        var caps = new Option<string?>("--caps") { Description = "A capability document (vhost-compat probe --json, --print-capabilities) instead of --socket" };
        var backend = new Option<string?>("--source-backend") { Description = "Source: the backend and its version, e.g. 'dpdk-testpmd 22.11.11'" };
        var devargs = new Option<string?>("--source-devargs") { Description = "Source: the backend's options, e.g. the vhost PMD devargs after iface=SOCK ('' for none)" };
        var latest = new Option<bool>("--latest") { Description = "Make the profile the catalog's latest" };
        var add = new Command("add", "Adds what a backend offers to a catalog file as a profile. Catalogs only grow: an id published with other values is refused (exit 1).\n\nExamples:\n  vhost-compat catalog add --catalog dpdk-net.json --id org.dpdk.v22.11 --socket /run/vnet.sock --type net --source-backend 'dpdk-testpmd 22.11.11' --source-devargs ''\n  vhost-compat catalog add --catalog blk.json --id org.example.blk.v1 --caps caps.json --latest")
        {
            file, id, socket, type, caps, backend, devargs, latest, timeout,
        };
        add.SetAction((r, ct) => AddAsync(
            io,
            new AddInputs(r.GetValue(file)!, r.GetValue(id)!, r.GetValue(socket), r.GetValue(type), r.GetValue(caps), r.GetValue(backend), r.GetValue(devargs), r.GetValue(latest)),
            r.GetValue(timeout),
            r.GetValue(json),
            ct));
        catalog.Add(add);

        var showFile = new Argument<string>("file") { Description = "The catalog file" };
        var show = new Command("show", "Validates a catalog file strictly and lists its profiles, their sources and how each differs from the latest.\n\nExample:\n  vhost-compat catalog show catalogs/dpdk-net.json")
        {
            showFile,
        };
        show.SetAction(r => Show(io, r.GetValue(showFile)!, r.GetValue(json)));
        catalog.Add(show);
    }

    public static async Task<int> AddAsync(CliIo io, AddInputs inputs, double timeoutSeconds, bool json, CancellationToken cancellationToken)
    {
        if ((inputs.Socket is null) == (inputs.Caps is null))
        {
            throw new CliException("give what to add as exactly one of --socket PATH or --caps FILE");
        }

        if (inputs.Caps is not null && inputs.Type is not null)
        {
            throw new CliException("--type is for --socket; a capability document says its type");
        }

        if (!InterfaceProfile.IsValidId(inputs.Id))
        {
            throw new CliException($"--id '{inputs.Id}' is not a valid profile id (lower-case dot-separated labels such as org.dpdk.v22.11)");
        }

        if (inputs.SourceDevargs is not null && inputs.SourceBackend is null)
        {
            throw new CliException("--source-devargs needs --source-backend");
        }

        if (timeoutSeconds is not (> 0 and <= 3600))
        {
            throw new CliException($"--timeout {timeoutSeconds.ToString(CultureInfo.InvariantCulture)} outside (0, 3600] seconds");
        }

        ProfileSource? source = null;
        if (inputs.SourceBackend is not null)
        {
            try
            {
                source = new ProfileSource(inputs.SourceBackend, inputs.SourceDevargs, DateOnly.FromDateTime(DateTime.UtcNow));
            }
            catch (ArgumentException ex)
            {
                throw new CliException($"--source-{ex.Message}");
            }
        }

        // Read the catalog first: a damaged file fails before a backend is probed.
        var (catalog, sources) = File.Exists(inputs.Catalog)
            ? ProfileCatalogFile.ParseWithSources(CliSupport.ReadInput(inputs.Catalog), inputs.Catalog)
            : (null, new Dictionary<string, ProfileSource>());
        BackendCapabilities offer;
        if (inputs.Caps is not null)
        {
            offer = CliSupport.LoadCaps(inputs.Caps);
        }
        else
        {
            var type = inputs.Type is not null ? CliSupport.ParseType(inputs.Type) : catalog?.DeviceType ?? VirtioDeviceType.Net;
            offer = await CheckCommands.ProbeAsync(inputs.Socket!, type, TimeSpan.FromSeconds(timeoutSeconds), probeRing: true, cancellationToken).ConfigureAwait(false);
        }

        ulong unnamed = offer.VirtioFeatures & ~VirtioFeatures.KnownMask(offer.DeviceType) & ~VirtioFeatures.VhostOnlyMask;
        if (unnamed != 0)
        {
            io.Err.WriteLine($"vhost-compat: warning: {VirtioFeatures.Format(offer.DeviceType, unnamed)} offered but not named by this SDK: not in the profile");
        }

        if (catalog is not null && offer.DeviceType != catalog.DeviceType)
        {
            throw new CliException($"{inputs.Catalog} is a {CapabilityDocument.TypeName(catalog.DeviceType)} catalog, the backend is {CapabilityDocument.TypeName(offer.DeviceType)}");
        }

        var profile = ProfileCatalogFile.ProfileFromCapabilities(offer, inputs.Id);
        ProfileCatalog grown;
        try
        {
            grown = ProfileCatalogFile.Grow(catalog, profile, inputs.Latest);
        }
        catch (InvalidOperationException ex)
        {
            string refusal = CliApp.OneLine($"{inputs.Catalog}: refused: {ex.Message}");
            io.Err.WriteLine($"vhost-compat: {refusal}");
            if (json)
            {
                io.Out.WriteLine(CliSupport.Json(w =>
                {
                    w.WriteStartObject();
                    w.WriteBoolean("added", false);
                    w.WriteBoolean("written", false);
                    w.WriteString("refused", refusal);
                    w.WriteEndObject();
                }));
            }

            return ExitCodes.No;
        }

        bool existed = catalog?.Find(inputs.Id) is not null;
        if (existed && source is not null && sources.TryGetValue(inputs.Id, out var kept) && kept != source)
        {
            // An entry's source records where it was first probed; a later, equal probe does not replace it.
            io.Err.WriteLine(CliApp.OneLine($"vhost-compat: note: {inputs.Id} keeps its recorded source ({kept.Backend}, probed {kept.Probed.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture)})"));
        }

        var newSources = new Dictionary<string, ProfileSource>(sources, StringComparer.Ordinal);
        if (!existed && source is not null)
        {
            newSources[inputs.Id] = source;
        }

        bool changed = !ReferenceEquals(grown, catalog);
        if (changed)
        {
            ProfileCatalogFile.Save(inputs.Catalog, grown, newSources);
        }

        string what = existed
            ? $"{inputs.Id} is already in {inputs.Catalog} with the same values{(changed ? "; now the latest" : string.Empty)}"
            : $"added {inputs.Id} to {inputs.Catalog}";
        if (json)
        {
            io.Out.WriteLine(CliSupport.Json(w =>
            {
                w.WriteStartObject();
                w.WriteBoolean("added", !existed);
                w.WriteBoolean("written", changed);
                w.WriteString("latest", grown.Latest.Id);
                w.WriteString("id", profile.Id);
                w.WriteString("canonical", profile.Canonical);
                w.WriteEndObject();
            }));
        }
        else
        {
            io.Out.WriteLine($"{what} ({grown.Profiles.Count} profiles, latest {grown.Latest.Id})");
            io.Out.WriteLine($"  {profile.Canonical}");
        }

        return ExitCodes.Ok;
    }

    public static int Show(CliIo io, string path, bool json)
    {
        var (catalog, sources) = ProfileCatalogFile.ParseWithSources(CliSupport.ReadInput(path), CliSupport.Label(path));
        if (json)
        {
            // The normalised file: what this SDK reads from it.
            io.Out.Write(ProfileCatalogFile.Render(catalog, sources));
            return ExitCodes.Ok;
        }

        io.Out.WriteLine($"{CliSupport.Label(path)}: {CapabilityDocument.TypeName(catalog.DeviceType)} catalog, {catalog.Profiles.Count} profiles, latest {catalog.Latest.Id}");
        foreach (var p in catalog.Profiles)
        {
            io.Out.WriteLine($"  {p.Id}{(p == catalog.Latest ? " (latest)" : string.Empty)}");
            if (sources.TryGetValue(p.Id!, out var s))
            {
                string devargs = s.Devargs is null ? string.Empty : $", devargs '{s.Devargs}'";
                io.Out.WriteLine($"    source: {s.Backend}{devargs}, probed {s.Probed.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture)}");
            }

            if (p != catalog.Latest)
            {
                var diff = p.Diff(catalog.Latest);
                io.Out.WriteLine(diff.Count == 0
                    ? $"    same values as {catalog.Latest.Id}"
                    : $"    vs {catalog.Latest.Id}: {string.Join(", ", diff.Select(d => $"{d.Key} {d.This} -> {d.Other}"))}");
            }

            io.Out.WriteLine($"    {p.Canonical}");
        }

        return ExitCodes.Ok;
    }
}

/// <summary>What <c>catalog add</c> was given (null: not given).</summary>
internal sealed record AddInputs(string Catalog, string Id, string? Socket, string? Type, string? Caps, string? SourceBackend, string? SourceDevargs, bool Latest);
