using System.Diagnostics.CodeAnalysis;
using System.Text.Json.Serialization;

namespace VhostCompat.Compat;

/// <summary>The JSON model of a catalog file (<see cref="ProfileCatalogFile"/>); every level refuses unknown members.</summary>
[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Disallow)]
[SuppressMessage("Performance", "CA1812", Justification = "Instantiated by System.Text.Json.")]
internal sealed class CatalogFileJson
{
    public required string Format { get; set; }

    public required int Version { get; set; }

    public required string Type { get; set; }

    public required string Latest { get; set; }

    public required List<CatalogProfileJson> Profiles { get; set; }
}

[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Disallow)]
[SuppressMessage("Performance", "CA1812", Justification = "Instantiated by System.Text.Json.")]
internal sealed class CatalogProfileJson
{
    public required string Id { get; set; }

    public required string Canonical { get; set; }

    public CatalogSourceJson? Source { get; set; }
}

[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Disallow)]
[SuppressMessage("Performance", "CA1812", Justification = "Instantiated by System.Text.Json.")]
internal sealed class CatalogSourceJson
{
    public required string Backend { get; set; }

    public string? Devargs { get; set; }

    public required string Probed { get; set; }
}

/// <summary>Source-generated (AOT-safe) serialisation of catalog files, with the options of <see cref="CompatJsonContext"/>.</summary>
[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.KebabCaseLower,
    WriteIndented = true,
    RespectNullableAnnotations = true,
    RespectRequiredConstructorParameters = true,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    NumberHandling = JsonNumberHandling.Strict)]
[JsonSerializable(typeof(CatalogFileJson))]
internal sealed partial class CatalogJsonContext : JsonSerializerContext
{
}
