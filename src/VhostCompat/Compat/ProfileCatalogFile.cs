using System.Globalization;
using System.Text;
using System.Text.Json;
using VhostCompat.Virtio;

namespace VhostCompat.Compat;

/// <summary>
/// Where a catalog entry came from: the backend that was probed, the options it ran with and the
/// day of the probe. Free text for people and for the test that re-probes the backend; it is not
/// part of the profile (two entries with different sources may present the same interface).
/// </summary>
public sealed record ProfileSource
{
    internal const int MaxBackendLength = 200;

    internal const int MaxDevargsLength = 1000;

    /// <summary>Creates a source.</summary>
    /// <param name="backend">The backend and its version, e.g. <c>dpdk-testpmd 22.11.11</c>: 1..200 characters, no control characters.</param>
    /// <param name="devargs">The backend's options as the file's users must repeat them (e.g. the vhost PMD devargs after <c>iface=SOCK</c>), empty for none, null when not recorded; at most 1000 characters, no control characters.</param>
    /// <param name="probed">The day the backend was probed (UTC).</param>
    /// <exception cref="ArgumentException">A text is empty, too long or contains a control character.</exception>
    public ProfileSource(string backend, string? devargs, DateOnly probed)
    {
        ArgumentNullException.ThrowIfNull(backend);
        if (TextProblem(backend, 1, MaxBackendLength) is { } b)
        {
            throw new ArgumentException($"backend: {b}", nameof(backend));
        }

        if (devargs is not null && TextProblem(devargs, 0, MaxDevargsLength) is { } d)
        {
            throw new ArgumentException($"devargs: {d}", nameof(devargs));
        }

        Backend = backend;
        Devargs = devargs;
        Probed = probed;
    }

    /// <summary>The backend and its version.</summary>
    public string Backend { get; }

    /// <summary>The backend's options (empty: none), or null when not recorded.</summary>
    public string? Devargs { get; }

    /// <summary>The day of the probe (UTC).</summary>
    public DateOnly Probed { get; }

    internal static string? TextProblem(string text, int min, int max) =>
        text.Length < min || text.Length > max ? $"{text.Length} characters, expected {min}..{max}"
        : text.Any(char.IsControl) ? "contains a control character"
        : null;
}

/// <summary>
/// A profile catalog as a file of its own, for backends that do not publish one themselves (DPDK's
/// vhost PMD, qemu-storage-daemon): the profiles they were measured to offer, under vendor ids, each
/// with where it came from (<see cref="ProfileSource"/>). A backend built with this SDK (or a proxy in
/// front of a real one) pinned to an entry offers exactly that interface. Catalogs only grow:
/// <see cref="Grow"/> refuses to change a published entry. Strict reading like
/// <see cref="CapabilityDocument.Parse"/>; System.Text.Json source generation (AOT-safe). See docs/profiles.md.
/// </summary>
/// <example>
/// <code>{"format":"vhostcompat-catalog","version":1,"type":"net","latest":"org.dpdk.v24.11",
///  "profiles":[{"id":"org.dpdk.v22.11","canonical":"type=net,...","source":{"backend":"dpdk-testpmd 22.11.11","devargs":"","probed":"2026-12-03"}}]}</code>
/// </example>
public static class ProfileCatalogFile
{
    /// <summary>The <c>format</c> value of a catalog file.</summary>
    public const string FormatName = "vhostcompat-catalog";

    /// <summary>The catalog file version this SDK reads and writes.</summary>
    public const int CurrentVersion = 1;

    private const string DateFormat = "yyyy-MM-dd";

    /// <summary>Reads a catalog file.</summary>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="CompatDocumentException">The file is malformed; the message names the file and field.</exception>
    public static ProfileCatalog Load(string path) => LoadWithSources(path).Catalog;

    /// <summary>Reads a catalog file and the source of each entry that records one (by profile id).</summary>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="CompatDocumentException">The file is malformed; the message names the file and field.</exception>
    public static (ProfileCatalog Catalog, IReadOnlyDictionary<string, ProfileSource> Sources) LoadWithSources(string path) =>
        ParseWithSources(CompatJsonReader.ReadFile(path, CompatJsonReader.Plain), path);

    /// <summary>Parses catalog file content; <paramref name="fileName"/> is used in error messages.</summary>
    /// <exception cref="CompatDocumentException">The content is malformed; the message names the file and field.</exception>
    public static ProfileCatalog Parse(ReadOnlyMemory<byte> utf8, string fileName) => ParseWithSources(utf8, fileName).Catalog;

    /// <summary>
    /// Parses catalog file content and the entries' sources. Strict: another <c>format</c> or
    /// <c>version</c>, unknown members, wrong JSON types, an invalid or duplicate id, a canonical form
    /// that does not parse for the catalog's <c>type</c>, a <c>latest</c> that is not among the profiles,
    /// an empty catalog, a source with empty or control-character text or a date other than
    /// <c>yyyy-MM-dd</c> all fail. Canonical forms are compared by value, so a file written by an SDK
    /// with fewer feature names still loads.
    /// </summary>
    /// <exception cref="CompatDocumentException">The content is malformed; the message names the file and field.</exception>
    public static (ProfileCatalog Catalog, IReadOnlyDictionary<string, ProfileSource> Sources) ParseWithSources(ReadOnlyMemory<byte> utf8, string fileName)
    {
        ArgumentNullException.ThrowIfNull(fileName);
        using var doc = CompatJsonReader.ParseDocument(utf8, fileName, CompatJsonReader.Plain);
        var root = doc.RootElement;
        if (!root.TryGetProperty("format", out var format) || format.ValueKind != JsonValueKind.String || format.GetString() != FormatName)
        {
            throw new CompatDocumentException(fileName, "$.format", $"not a profile catalog file (expected \"{FormatName}\")");
        }

        if (!root.TryGetProperty("version", out var version) || version.ValueKind != JsonValueKind.Number || !version.TryGetInt32(out int v) || v != CurrentVersion)
        {
            throw new CompatDocumentException(fileName, "$.version", $"unsupported catalog file version (this SDK reads version {CurrentVersion})");
        }

        var json = CompatJsonReader.Deserialize(root, CatalogJsonContext.Default.CatalogFileJson, fileName, "$", CompatJsonReader.Plain);
        var type = InterfaceProfile.ParseType(json.Type) ?? throw new CompatDocumentException(fileName, "$.type", $"unknown device type '{json.Type}'");
        if (json.Profiles.Count == 0)
        {
            throw new CompatDocumentException(fileName, "$.profiles", "empty: a catalog holds at least one profile");
        }

        var profiles = new List<InterfaceProfile>();
        var sources = new Dictionary<string, ProfileSource>(StringComparer.Ordinal);
        var ids = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < json.Profiles.Count; i++)
        {
            var e = json.Profiles[i];
            string field = $"$.profiles[{i}]";
            profiles.Add(CompatJsonReader.ProfileEntry(e.Id, e.Canonical, type, ids, fileName, field));

            if (e.Source is { } s)
            {
                sources.Add(e.Id, ReadSource(s, fileName, field + ".source"));
            }
        }

        if (!ids.Contains(json.Latest))
        {
            throw new CompatDocumentException(fileName, "$.latest", $"latest profile {json.Latest} is not among the profiles");
        }

        return (new ProfileCatalog(type, profiles, json.Latest), sources);
    }

    /// <summary>
    /// The catalog file text: indented JSON, profiles in catalog order with their canonical forms and,
    /// where given, their sources; trailing newline. <see cref="ParseWithSources"/> reads it back to an
    /// equal catalog.
    /// </summary>
    /// <param name="catalog">The catalog.</param>
    /// <param name="sources">Sources by profile id (optional; ids without a source have none).</param>
    /// <exception cref="ArgumentException">A source names an id that is not in the catalog.</exception>
    public static string Render(ProfileCatalog catalog, IReadOnlyDictionary<string, ProfileSource>? sources = null)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        sources ??= new Dictionary<string, ProfileSource>();
        if (sources.Keys.FirstOrDefault(id => catalog.Find(id) is null) is { } stray)
        {
            throw new ArgumentException($"source for {stray}, which is not in the catalog", nameof(sources));
        }

        var json = new CatalogFileJson
        {
            Format = FormatName,
            Version = CurrentVersion,
            Type = VirtioFeatures.TypeLabel(catalog.DeviceType),
            Latest = catalog.Latest.Id!,
            Profiles = [.. catalog.Profiles.Select(p => new CatalogProfileJson
            {
                Id = p.Id!,
                Canonical = p.Canonical,
                Source = sources.TryGetValue(p.Id!, out var s)
                    ? new CatalogSourceJson { Backend = s.Backend, Devargs = s.Devargs, Probed = s.Probed.ToString(DateFormat, CultureInfo.InvariantCulture) }
                    : null,
            })],
        };
        return JsonSerializer.Serialize(json, CatalogJsonContext.Default.CatalogFileJson) + "\n";
    }

    /// <summary>Writes <see cref="Render"/>'s text to <paramref name="path"/> crash-safely (temp file, fsync, rename).</summary>
    /// <exception cref="ArgumentException">A source names an id that is not in the catalog.</exception>
    /// <exception cref="IOException">The file cannot be written (the previous content is left intact).</exception>
    public static void Save(string path, ProfileCatalog catalog, IReadOnlyDictionary<string, ProfileSource>? sources = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        AtomicFile.Write(path, Encoding.UTF8.GetBytes(Render(catalog, sources)));
    }

    /// <summary>
    /// The catalog with <paramref name="profile"/> added — catalogs only grow. A profile whose id is
    /// already published with the same values leaves the catalog as it is (adding is idempotent).
    /// </summary>
    /// <param name="catalog">The catalog so far, or null for a new one (then the profile is the latest).</param>
    /// <param name="profile">The profile, with an id.</param>
    /// <param name="makeLatest">Make it the catalog's latest profile (offered when nothing is pinned).</param>
    /// <exception cref="ArgumentException">The profile has no id, or another device type than the catalog.</exception>
    /// <exception cref="InvalidOperationException">
    /// The id is published with other values: the message names every differing key (published value
    /// first). Publish a new id instead.
    /// </exception>
    public static ProfileCatalog Grow(ProfileCatalog? catalog, InterfaceProfile profile, bool makeLatest)
    {
        ArgumentNullException.ThrowIfNull(profile);
        if (profile.Id is null)
        {
            throw new ArgumentException("a catalog profile needs an id", nameof(profile));
        }

        if (catalog is null)
        {
            return new ProfileCatalog(profile.DeviceType, [profile], profile.Id);
        }

        if (profile.DeviceType != catalog.DeviceType)
        {
            throw new ArgumentException($"profile {profile.Id} is for {VirtioFeatures.TypeLabel(profile.DeviceType)}, the catalog for {VirtioFeatures.TypeLabel(catalog.DeviceType)}", nameof(profile));
        }

        string latest = makeLatest ? profile.Id : catalog.Latest.Id!;
        if (catalog.Find(profile.Id) is { } published)
        {
            if (!published.SameInterface(profile))
            {
                string keys = string.Join(", ", published.Diff(profile).Select(d => $"{d.Key} {d.This} -> {d.Other}"));
                throw new InvalidOperationException($"profile {profile.Id} is published with other values ({keys}); catalogs only grow: publish a new id");
            }

            return latest == catalog.Latest.Id ? catalog : new ProfileCatalog(catalog.DeviceType, catalog.Profiles, latest);
        }

        return new ProfileCatalog(catalog.DeviceType, [.. catalog.Profiles, profile], latest);
    }

    /// <summary>
    /// The interface a backend offers, as a profile: what a guest behind it can see. Features are the
    /// offered virtio bits without the vhost-only bits and bits this SDK has no name for; <c>queues</c>
    /// is <see cref="BackendCapabilities.Queues"/> (net: rounded down to an even number, 2 without
    /// <c>mq</c>; block 1 without <c>mq</c>; rng 1); <c>max_ring</c> is the largest power of two not above
    /// <see cref="BackendCapabilities.MaxQueueSize"/>; <c>mtu</c> (net) and <c>blk_size</c> (block) are
    /// pinned to the config value when the feature is offered and the value is known; <c>device_state</c>
    /// is pinned to whether DEVICE_STATE is offered. <c>capacity</c> is not pinned: it is the size of
    /// the disk, not a property of the backend.
    /// </summary>
    /// <param name="capabilities">A probe or a capability document.</param>
    /// <param name="id">The profile id (null: anonymous).</param>
    /// <exception cref="ProfileFormatException">The offer breaks a rule a profile must keep (the key is named), or the id is invalid.</exception>
    public static InterfaceProfile ProfileFromCapabilities(BackendCapabilities capabilities, string? id)
    {
        ArgumentNullException.ThrowIfNull(capabilities);
        var c = capabilities;
        var type = c.DeviceType;
        ulong features = c.VirtioFeatures & VirtioFeatures.KnownMask(type) & ~VirtioFeatures.VhostOnlyMask;
        int maxRing = c.MaxQueueSize < 1 ? 1 : 1 << (31 - int.LeadingZeroCount(Math.Min(c.MaxQueueSize, 32768)));
        int queues = type switch
        {
            VirtioDeviceType.Net => (features & VirtioFeatureBits.NetMq) == 0 ? 2 : Math.Max(2, c.Queues & ~1),
            VirtioDeviceType.Block => (features & (1UL << 12)) == 0 ? 1 : Math.Max(1, c.Queues),
            VirtioDeviceType.Rng => 1,
            _ when VirtioDeviceTypes.Find(type) is { } info => Math.Clamp(c.Queues, info.MinQueues, info.MaxQueues),
            _ => Math.Max(1, c.Queues),
        };
        ushort? mtu = type == VirtioDeviceType.Net && (features & VirtioFeatureBits.NetMtu) != 0
            && ConfigValue(c, "mtu") is { } m && m is >= 68 and <= 65535 ? (ushort)m : null;
        uint? blockSize = type == VirtioDeviceType.Block && (features & (1UL << 6)) != 0
            && ConfigValue(c, "blk_size") is { } b && b is >= 512 and <= 65536 && (b & (b - 1)) == 0 ? (uint)b : null;
        bool deviceState = (c.ProtocolFeatures & (ulong)VhostUserProtocolFeatures.DeviceState) != 0;
        return new InterfaceProfile(type, features, (ushort)maxRing, queues, id, mtu, blockSize, null, deviceState);
    }

    private static ulong? ConfigValue(BackendCapabilities c, string name) =>
        c.Config.TryGetValue(name, out string? text) && ulong.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out ulong v) ? v : null;

    private static ProfileSource ReadSource(CatalogSourceJson s, string fileName, string field)
    {
        if (ProfileSource.TextProblem(s.Backend, 1, ProfileSource.MaxBackendLength) is { } b)
        {
            throw new CompatDocumentException(fileName, field + ".backend", b);
        }

        if (s.Devargs is { } d && ProfileSource.TextProblem(d, 0, ProfileSource.MaxDevargsLength) is { } dp)
        {
            throw new CompatDocumentException(fileName, field + ".devargs", dp);
        }

        if (!DateOnly.TryParseExact(s.Probed, DateFormat, CultureInfo.InvariantCulture, DateTimeStyles.None, out var probed))
        {
            throw new CompatDocumentException(fileName, field + ".probed", $"'{s.Probed}' is not a date (yyyy-MM-dd)");
        }

        return new ProfileSource(s.Backend, s.Devargs, probed);
    }
}
