using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using VhostCompat.Virtio;

namespace VhostCompat.Compat;

/// <summary>
/// A directory of acked-state records, one file <c>&lt;key&gt;.json</c> per device. Saves are
/// crash-safe (temp file in the same directory, write, fsync, rename): an interrupted save leaves
/// the previous record intact. A damaged record is reported, never silently replaced.
/// Not synchronised: one backend process owns a key.
/// </summary>
public sealed class AckedStateStore
{
    /// <summary>Uses (and creates when saving) <paramref name="directory"/>.</summary>
    public AckedStateStore(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        Directory = Path.GetFullPath(directory);
    }

    /// <summary>The directory holding the records.</summary>
    public string Directory { get; }

    /// <summary>True for a usable key: 1–200 characters of <c>A-Z a-z 0-9 . _ -</c>, not starting with a dot.</summary>
    public static bool IsValidKey(string? key) =>
        key is { Length: > 0 and <= 200 } && key[0] != '.' && key.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-');

    /// <summary>
    /// The default key for a backend serving <paramref name="socketPath"/>: <c>sock-&lt;file name&gt;-&lt;12 hex digits of
    /// SHA-256(full path)&gt;</c>, stable for the same path and distinct for different directories.
    /// </summary>
    public static string DefaultKey(string socketPath)
    {
        ArgumentException.ThrowIfNullOrEmpty(socketPath);
        string full = Path.GetFullPath(socketPath);
        string name = new([.. Path.GetFileName(full).Select(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-' ? c : '_')]);
        if (name.Length > 64)
        {
            name = name[..64];
        }

        string hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(full)))[..12];
        return $"sock-{name}-{hash}";
    }

    /// <summary>The file that holds the record for <paramref name="key"/>.</summary>
    /// <exception cref="ArgumentException">Invalid key.</exception>
    public string PathFor(string key) =>
        IsValidKey(key) ? Path.Combine(Directory, key + ".json") : throw new ArgumentException($"'{key}' is not a valid record key", nameof(key));

    /// <summary>Loads the record for <paramref name="key"/>, or null when there is none.</summary>
    /// <exception cref="AckedStateCorruptException">The file exists but is damaged; it is left in place.</exception>
    public AckedStateRecord? Load(string key)
    {
        string path = PathFor(key);
        if (!File.Exists(path))
        {
            return null;
        }

        var record = AckedStateRecord.Parse(CompatJsonReader.ReadFile(path, CompatJsonReader.Corrupt), path);
        if (record.Key != key)
        {
            throw new AckedStateCorruptException(path, "$.payload.key", $"record key '{record.Key}' does not match the file name");
        }

        return record;
    }

    /// <summary>
    /// Saves <paramref name="record"/> crash-safely with the next generation number (one more than
    /// the stored record's). Returns the record as saved.
    /// </summary>
    /// <exception cref="AckedStateCorruptException">The stored record is damaged: nothing is written (remove it deliberately).</exception>
    public AckedStateRecord Save(AckedStateRecord record) => SaveCore(record, null);

    internal AckedStateRecord SaveCore(AckedStateRecord record, Action<string>? beforeRename)
    {
        ArgumentNullException.ThrowIfNull(record);
        var previous = Load(record.Key);
        var saved = record.WithGeneration((previous?.Generation ?? 0) + 1, DateTimeOffset.UtcNow);
        System.IO.Directory.CreateDirectory(Directory);
        AtomicFile.Write(PathFor(record.Key), Encoding.UTF8.GetBytes(saved.ToJson()), beforeRename);
        return saved;
    }
}
