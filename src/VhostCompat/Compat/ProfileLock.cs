using System.Text;
using System.Text.Json;
using VhostCompat.Virtio;

namespace VhostCompat.Compat;

/// <summary>One problem found when a catalog is compared with its lock file.</summary>
/// <param name="ProfileId">The profile concerned.</param>
/// <param name="Kind"><c>removed</c>, <c>changed</c>, <c>added</c> (not an error: the lock needs updating) or <c>device-type</c>.</param>
/// <param name="Message">A sentence for humans; for <c>changed</c> it lists the keys that differ.</param>
public sealed record LockFinding(string ProfileId, string Kind, string Message)
{
    /// <summary>True for findings that break the "catalogs only grow" rule.</summary>
    public bool IsError => Kind != "added";
}

/// <summary>
/// <c>profiles.lock.json</c>: the profiles a backend has published, which backend authors commit
/// next to their code. <see cref="Verify"/> fails when a published profile was removed from the
/// catalog or changed; new profiles are allowed and recorded by <see cref="Update"/>.
/// Profiles are compared by value (the lock's canonical strings are parsed with this SDK), so an
/// SDK that learns new feature names (new <c>name=off</c> keys) does not break a lock.
/// </summary>
public sealed class ProfileLock
{
    /// <summary>The <c>format</c> value of a lock file.</summary>
    public const string FormatName = "vhostcompat-profiles-lock";

    /// <summary>The lock file version this SDK reads and writes.</summary>
    public const int CurrentVersion = 1;

    private ProfileLock(VirtioDeviceType deviceType, string latest, IReadOnlyList<InterfaceProfile> profiles)
    {
        DeviceType = deviceType;
        Latest = latest;
        Profiles = profiles;
    }

    /// <summary>The device type.</summary>
    public VirtioDeviceType DeviceType { get; }

    /// <summary>Id of the latest profile when the lock was written.</summary>
    public string Latest { get; }

    /// <summary>The published profiles.</summary>
    public IReadOnlyList<InterfaceProfile> Profiles { get; }

    /// <summary>A lock that records exactly <paramref name="catalog"/>.</summary>
    public static ProfileLock FromCatalog(ProfileCatalog catalog)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        return new ProfileLock(catalog.DeviceType, catalog.Latest.Id!, catalog.Profiles);
    }

    /// <summary>Reads a lock file.</summary>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="CompatDocumentException">The file is malformed; the message names the file and field.</exception>
    public static ProfileLock Load(string path) => Parse(CompatJsonReader.ReadFile(path, CompatJsonReader.Plain), path);

    /// <summary>Parses lock file content; <paramref name="fileName"/> is used in error messages.</summary>
    /// <exception cref="CompatDocumentException">The content is malformed; the message names the file and field.</exception>
    public static ProfileLock Parse(ReadOnlyMemory<byte> utf8, string fileName)
    {
        using var doc = CompatJsonReader.ParseDocument(utf8, fileName, CompatJsonReader.Plain);
        var root = doc.RootElement;
        if (!root.TryGetProperty("format", out var format) || format.ValueKind != JsonValueKind.String || format.GetString() != FormatName)
        {
            throw new CompatDocumentException(fileName, "format", $"not a profile lock file (expected \"{FormatName}\")");
        }

        if (!root.TryGetProperty("version", out var version) || version.ValueKind != JsonValueKind.Number || !version.TryGetInt32(out int v) || v != CurrentVersion)
        {
            throw new CompatDocumentException(fileName, "version", $"unsupported lock file version (this SDK reads version {CurrentVersion})");
        }

        var json = CompatJsonReader.Deserialize(root, CompatJsonContext.Default.LockFileJson, fileName, "$", CompatJsonReader.Plain);
        var type = InterfaceProfile.ParseType(json.DeviceType) ?? throw new CompatDocumentException(fileName, "$.device-type", $"unknown device type '{json.DeviceType}'");
        var profiles = new List<InterfaceProfile>();
        var ids = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < json.Profiles.Count; i++)
        {
            var e = json.Profiles[i];
            string field = $"$.profiles[{i}]";
            profiles.Add(CompatJsonReader.ProfileEntry(e.Id, e.Canonical, type, ids, fileName, field));
        }

        if (!ids.Contains(json.Latest))
        {
            throw new CompatDocumentException(fileName, "$.latest", $"latest profile {json.Latest} is not among the profiles");
        }

        return new ProfileLock(type, json.Latest, profiles);
    }

    /// <summary>
    /// Compares a catalog with a lock: every locked profile must still be in the catalog with the
    /// same values. Profiles only in the catalog are reported as <c>added</c> (not errors).
    /// </summary>
    public static IReadOnlyList<LockFinding> Verify(ProfileCatalog catalog, ProfileLock locked)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentNullException.ThrowIfNull(locked);
        var findings = new List<LockFinding>();
        if (catalog.DeviceType != locked.DeviceType)
        {
            findings.Add(new LockFinding("*", "device-type", $"the lock is for {VirtioFeatures.TypeLabel(locked.DeviceType)}, the catalog for {VirtioFeatures.TypeLabel(catalog.DeviceType)}"));
            return findings;
        }

        foreach (var old in locked.Profiles)
        {
            var now = catalog.Find(old.Id!);
            if (now is null)
            {
                findings.Add(new LockFinding(old.Id!, "removed", $"published profile {old.Id} was removed from the catalog (catalogs only grow)"));
            }
            else if (!now.SameInterface(old))
            {
                string keys = string.Join(", ", old.Diff(now).Select(d => $"{d.Key} {d.This} -> {d.Other}"));
                findings.Add(new LockFinding(old.Id!, "changed", $"published profile {old.Id} changed: {keys} (publish a new id instead)"));
            }
        }

        foreach (var p in catalog.Profiles)
        {
            if (!locked.Profiles.Any(l => l.Id == p.Id))
            {
                findings.Add(new LockFinding(p.Id!, "added", $"new profile {p.Id} is not in the lock yet"));
            }
        }

        return findings;
    }

    /// <summary>
    /// Verifies <paramref name="catalog"/> against the lock at <paramref name="path"/> (if it exists)
    /// and, when nothing was removed or changed, writes the updated lock crash-safely.
    /// </summary>
    /// <returns>The findings; when any <see cref="LockFinding.IsError"/> the file was not written.</returns>
    /// <exception cref="CompatDocumentException">The existing lock file is malformed (it is left untouched).</exception>
    public static IReadOnlyList<LockFinding> Update(string path, ProfileCatalog catalog)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(catalog);
        IReadOnlyList<LockFinding> findings = File.Exists(path) ? Verify(catalog, Load(path)) : [];
        if (!findings.Any(f => f.IsError))
        {
            AtomicFile.Write(path, Encoding.UTF8.GetBytes(FromCatalog(catalog).ToJson()));
        }

        return findings;
    }

    /// <summary>The lock file text (indented JSON, profiles in catalog order, trailing newline).</summary>
    public string ToJson()
    {
        var json = new LockFileJson
        {
            Format = FormatName,
            Version = CurrentVersion,
            DeviceType = VirtioFeatures.TypeLabel(DeviceType),
            Latest = Latest,
            Profiles = Profiles.Select(p => new ProfileEntryJson { Id = p.Id!, Canonical = p.Canonical }).ToList(),
        };
        return JsonSerializer.Serialize(json, CompatJsonContext.Default.LockFileJson) + "\n";
    }
}
