using System.Diagnostics.CodeAnalysis;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace VhostCompat.Compat;

/// <summary>
/// A compatibility file (capability document, lock file, acked-state record) that cannot be used:
/// malformed JSON, a wrong type, an unknown version, a failed checksum, a value out of range.
/// Nothing is overwritten when this is thrown.
/// </summary>
public class CompatDocumentException : Exception
{
    /// <summary>Creates the exception.</summary>
    public CompatDocumentException()
    {
    }

    /// <summary>Creates the exception with a message.</summary>
    public CompatDocumentException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and an inner exception.</summary>
    public CompatDocumentException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Creates the exception naming the file and (when known) the field.</summary>
    public CompatDocumentException(string fileName, string? field, string message, Exception? innerException = null)
        : base(field is null ? $"{fileName}: {message}" : $"{fileName}: {field}: {message}", innerException)
    {
        FileName = fileName;
        Field = field;
    }

    /// <summary>The file (path, or a label such as <c>&lt;stdin&gt;</c>) the problem is in.</summary>
    public string? FileName { get; }

    /// <summary>The JSON path or field name at fault, when known (<c>$.vhostcompat.queues</c>, <c>sha256</c>).</summary>
    public string? Field { get; }
}

/// <summary>An acked-state record that exists but is truncated, corrupt or tampered with (its checksum does not match).</summary>
public sealed class AckedStateCorruptException : CompatDocumentException
{
    /// <summary>Creates the exception.</summary>
    public AckedStateCorruptException()
    {
    }

    /// <summary>Creates the exception with a message.</summary>
    public AckedStateCorruptException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and an inner exception.</summary>
    public AckedStateCorruptException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Creates the exception naming the file and (when known) the field.</summary>
    public AckedStateCorruptException(string fileName, string? field, string message, Exception? innerException = null)
        : base(fileName, field, message, innerException)
    {
    }
}

/// <summary>Shared strict reading of compatibility files.</summary>
internal static class CompatJsonReader
{
    /// <summary>One <c>{id, canonical}</c> entry of a catalog or lock file: a valid id, not seen before in <paramref name="ids"/>, a valid profile.</summary>
    /// <exception cref="CompatDocumentException">Naming the file and the field.</exception>
    public static InterfaceProfile ProfileEntry(string id, string canonical, Virtio.VirtioDeviceType type, ISet<string> ids, string fileName, string field)
    {
        if (!InterfaceProfile.IsValidId(id))
        {
            throw new CompatDocumentException(fileName, field + ".id", $"'{id}' is not a valid profile id");
        }

        if (!ids.Add(id))
        {
            throw new CompatDocumentException(fileName, field + ".id", $"profile id {id} appears twice");
        }

        try
        {
            return InterfaceProfile.Parse(canonical, type).WithId(id);
        }
        catch (ProfileFormatException ex)
        {
            throw new CompatDocumentException(fileName, field + ".canonical", ex.Message, ex);
        }
    }

    /// <summary>Largest compatibility file read (1 MiB); anything bigger is refused before parsing.</summary>
    public const int MaxFileBytes = 1 << 20;

    public static readonly JsonDocumentOptions DocumentOptions = new() { MaxDepth = 16, CommentHandling = JsonCommentHandling.Disallow, AllowTrailingCommas = false };

    public static byte[] ReadFile(string path, Func<string, string?, string, Exception?, CompatDocumentException> error)
    {
        try
        {
            using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.None);
            if (fs.Length > MaxFileBytes)
            {
                throw error(path, null, $"file is {fs.Length} bytes, more than the {MaxFileBytes} allowed", null);
            }

            var buffer = new byte[fs.Length];
            fs.ReadExactly(buffer);
            return buffer;
        }
        catch (IOException ex) when (ex is not FileNotFoundException and not DirectoryNotFoundException)
        {
            throw error(path, null, ex.Message, ex);
        }
        catch (UnauthorizedAccessException ex)
        {
            throw error(path, null, ex.Message, ex);
        }
    }

    public static JsonDocument ParseDocument(ReadOnlyMemory<byte> utf8, string fileName, Func<string, string?, string, Exception?, CompatDocumentException> error)
    {
        if (utf8.Length > MaxFileBytes)
        {
            throw error(fileName, null, $"document is {utf8.Length} bytes, more than the {MaxFileBytes} allowed", null);
        }

        try
        {
            var doc = JsonDocument.Parse(utf8, DocumentOptions);
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                doc.Dispose();
                throw error(fileName, "$", "the document is not a JSON object", null);
            }

            // The reader checks structure, not text: invalid UTF-8 or a lone surrogate escape only fails
            // (with InvalidOperationException) when a string is read. Fail closed here instead.
            if (FindUndecodableString(doc.RootElement, "$") is { } bad)
            {
                doc.Dispose();
                throw error(fileName, bad, "a string is not valid Unicode (invalid UTF-8 or a lone surrogate escape)", null);
            }

            return doc;
        }
        catch (JsonException ex)
        {
            throw error(fileName, ex.Path, $"malformed JSON ({ex.Message})", ex);
        }
    }

    /// <summary>The path of the first property name or string value that cannot be decoded, or null (depth is bounded by <see cref="DocumentOptions"/>).</summary>
    private static string? FindUndecodableString(JsonElement element, string path)
    {
        try
        {
            switch (element.ValueKind)
            {
                case JsonValueKind.String:
                    _ = element.GetString();
                    break;
                case JsonValueKind.Object:
                    foreach (var p in element.EnumerateObject())
                    {
                        string child = path + "." + p.Name;
                        if (FindUndecodableString(p.Value, child) is { } bad)
                        {
                            return bad;
                        }
                    }

                    break;
                case JsonValueKind.Array:
                    int i = 0;
                    foreach (var item in element.EnumerateArray())
                    {
                        if (FindUndecodableString(item, $"{path}[{i++}]") is { } bad)
                        {
                            return bad;
                        }
                    }

                    break;
            }

            return null;
        }
        catch (InvalidOperationException)
        {
            return path;
        }
    }

    public static T Deserialize<T>(JsonElement element, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> typeInfo, string fileName, string pathPrefix, Func<string, string?, string, Exception?, CompatDocumentException> error)
    {
        try
        {
            return element.Deserialize(typeInfo) ?? throw error(fileName, pathPrefix, "is null", null);
        }
        catch (JsonException ex)
        {
            string path = ex.Path is { Length: > 1 } p ? pathPrefix + p[1..] : pathPrefix;
            throw error(fileName, path, ex.Message, ex);
        }
        catch (InvalidOperationException ex)
        {
            throw error(fileName, pathPrefix, ex.Message, ex);
        }
    }

    public static CompatDocumentException Plain(string file, string? field, string message, Exception? inner) => new(file, field, message, inner);

    public static CompatDocumentException Corrupt(string file, string? field, string message, Exception? inner) => new AckedStateCorruptException(file, field, message, inner);
}

[SuppressMessage("Performance", "CA1812", Justification = "Instantiated by System.Text.Json.")]
internal sealed class CapabilitiesJson
{
    [JsonPropertyName("type")]
    public required string Type { get; set; }

    [JsonPropertyName("features")]
    public required List<string> Features { get; set; }

    [JsonPropertyName("vhostcompat")]
    public required VhostCompatCapabilitiesJson VhostCompat { get; set; }
}

[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Disallow)]
[SuppressMessage("Performance", "CA1812", Justification = "Instantiated by System.Text.Json.")]
internal sealed class VhostCompatCapabilitiesJson
{
    public required int SchemaVersion { get; set; }

    public required uint DeviceId { get; set; }

    public required string VirtioFeatures { get; set; }

    public List<string>? VirtioFeatureNames { get; set; }

    public required string ProtocolFeatures { get; set; }

    public List<string>? ProtocolFeatureNames { get; set; }

    public required int Queues { get; set; }

    public ulong? QueueNumReply { get; set; }

    public required int MaxQueueSize { get; set; }

    public required int ConfigSize { get; set; }

    public required int MaxMemorySlots { get; set; }

    public Dictionary<string, string>? Config { get; set; }

    public ProfilesJson? Profiles { get; set; }

    /// <summary>The host's frontend (hypervisor version, loadable machine types), when added by <c>vhost-compat frontend</c>.</summary>
    public FrontendJson? Frontend { get; set; }

    /// <summary>Device-state formats the device loads (absent: no DEVICE_STATE, or a document written before it existed).</summary>
    public List<uint>? DeviceStateVersions { get; set; }
}

[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Disallow)]
[SuppressMessage("Performance", "CA1812", Justification = "Instantiated by System.Text.Json.")]
internal sealed class ProfilesJson
{
    public required string Latest { get; set; }

    public required List<ProfileEntryJson> Supported { get; set; }
}

[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Disallow)]
[SuppressMessage("Performance", "CA1812", Justification = "Instantiated by System.Text.Json.")]
internal sealed class ProfileEntryJson
{
    public required string Id { get; set; }

    public required string Canonical { get; set; }
}

[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Disallow)]
[SuppressMessage("Performance", "CA1812", Justification = "Instantiated by System.Text.Json.")]
internal sealed class LockFileJson
{
    public required string Format { get; set; }

    public required int Version { get; set; }

    public required string DeviceType { get; set; }

    public required string Latest { get; set; }

    public required List<ProfileEntryJson> Profiles { get; set; }
}

[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Disallow)]
[SuppressMessage("Performance", "CA1812", Justification = "Instantiated by System.Text.Json.")]
internal sealed class AckedStatePayloadJson
{
    public required string Key { get; set; }

    public required string DeviceType { get; set; }

    public required ulong Generation { get; set; }

    public required string SavedAt { get; set; }

    public required string AckedFeatures { get; set; }

    public required List<string> AckedFeatureNames { get; set; }

    public required string AckedProtocolFeatures { get; set; }

    public string? ProfileId { get; set; }

    public string? Profile { get; set; }

    /// <summary>Absent in records written before it existed (they count as pinned).</summary>
    public bool? ProfilePinned { get; set; }

    public required int QueueCount { get; set; }

    public required List<QueueSizeJson> QueueSizes { get; set; }

    public required string Config { get; set; }

    /// <summary>The VM's frontend (hypervisor version, machine type), when management recorded it.</summary>
    public FrontendJson? Frontend { get; set; }

    /// <summary>The source device's state format, when DEVICE_STATE was acked.</summary>
    public uint? DeviceStateVersion { get; set; }
}

[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Disallow)]
[SuppressMessage("Performance", "CA1812", Justification = "Instantiated by System.Text.Json.")]
internal sealed class QueueSizeJson
{
    public required int Index { get; set; }

    public required int Size { get; set; }
}

[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Disallow)]
[SuppressMessage("Performance", "CA1812", Justification = "Instantiated by System.Text.Json.")]
internal sealed class FrontendJson
{
    public required string Product { get; set; }

    public required string ProductVersion { get; set; }

    public string? Machine { get; set; }

    public List<string> Machines { get; set; } = [];
}

[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Disallow)]
[SuppressMessage("Performance", "CA1812", Justification = "Instantiated by System.Text.Json.")]
internal sealed class FrontendDocumentJson
{
    public required string Format { get; set; }

    public required int Version { get; set; }

    public required string Product { get; set; }

    public required string ProductVersion { get; set; }

    public string? Machine { get; set; }

    public List<string> Machines { get; set; } = [];
}

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.KebabCaseLower,
    WriteIndented = true,
    RespectNullableAnnotations = true,
    RespectRequiredConstructorParameters = true,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    NumberHandling = JsonNumberHandling.Strict)]
[JsonSerializable(typeof(CapabilitiesJson))]
[JsonSerializable(typeof(LockFileJson))]
[JsonSerializable(typeof(AckedStatePayloadJson))]
[JsonSerializable(typeof(FrontendDocumentJson))]
internal sealed partial class CompatJsonContext : JsonSerializerContext
{
}
