using System.Text.Json;

namespace VhostCompat.Compat;

/// <summary>
/// The frontend side of a VM's interface: which hypervisor build runs the VM (or can receive it) and which machine
/// types it has. What QEMU puts into a migration stream, and whether the destination can load it at all, depends on
/// the machine type: a VM created with QEMU 10.0's own <c>pc-q35-10.0</c> cannot be loaded by QEMU 7.2, which has no
/// such machine. Read from QMP (<c>query-version</c>, <c>query-machines</c>, and for a running VM
/// <c>qom-get /machine type</c>) by <c>vhost-compat frontend</c>; carried in acked-state records (the VM's side) and
/// capability documents (the destination host's side); checked by <see cref="PreflightCheck"/>.
/// </summary>
public sealed class FrontendInfo
{
    /// <summary>The <c>format</c> of a frontend document.</summary>
    public const string FormatName = "vhostcompat-frontend";

    private const int MaxMachines = 512;

    /// <summary>Creates a frontend description.</summary>
    /// <param name="product">The frontend product, e.g. <c>qemu</c>.</param>
    /// <param name="version">Its version, e.g. <c>10.0.2</c>.</param>
    /// <param name="machine">The machine type of the VM it runs (e.g. <c>pc-q35-7.2</c>), or null for a host's frontend.</param>
    /// <param name="machines">Machine types (names and aliases) it can run and load; empty when unknown.</param>
    /// <exception cref="ArgumentException">A name that is empty, longer than 64 characters or not made of letters, digits, '.', '_', '-' and '+'.</exception>
    public FrontendInfo(string product, string version, string? machine, IEnumerable<string>? machines = null)
    {
        Product = Checked(product, nameof(product));
        Version = Checked(version, nameof(version));
        Machine = machine is null ? null : Checked(machine, nameof(machine));
        var list = (machines ?? []).Select(m => Checked(m, nameof(machines))).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToList();
        if (list.Count > MaxMachines)
        {
            throw new ArgumentException($"{list.Count} machine types, more than {MaxMachines}", nameof(machines));
        }

        Machines = list;
    }

    /// <summary>The product, e.g. <c>qemu</c>.</summary>
    public string Product { get; }

    /// <summary>The product version, e.g. <c>7.2.22</c>.</summary>
    public string Version { get; }

    /// <summary>The VM's machine type (a concrete versioned name such as <c>pc-q35-7.2</c>), or null.</summary>
    public string? Machine { get; }

    /// <summary>Machine types this frontend can run and load, sorted; empty when unknown.</summary>
    public IReadOnlyList<string> Machines { get; }

    /// <summary>"qemu 10.0.2" or "qemu 10.0.2, machine pc-q35-7.2".</summary>
    public override string ToString() => Machine is null ? $"{Product} {Version}" : $"{Product} {Version}, machine {Machine}";

    /// <summary>True when <see cref="Machines"/> is known and holds <paramref name="machine"/>; null when unknown.</summary>
    public bool? CanLoad(string machine) => Machines.Count == 0 ? null : Machines.Contains(machine, StringComparer.Ordinal);

    /// <summary>This frontend with <paramref name="machine"/> as the VM's machine type.</summary>
    public FrontendInfo WithMachine(string? machine) => new(Product, Version, machine, Machines);

    /// <summary>A frontend document (indented JSON, trailing newline).</summary>
    public string ToJson()
    {
        var json = new FrontendDocumentJson
        {
            Format = FormatName,
            Version = 1,
            Product = Product,
            ProductVersion = Version,
            Machine = Machine,
            Machines = [.. Machines],
        };
        return JsonSerializer.Serialize(json, CompatJsonContext.Default.FrontendDocumentJson) + "\n";
    }

    /// <summary>Parses a frontend document (strict: unknown members, wrong types and invalid names fail).</summary>
    /// <exception cref="CompatDocumentException">Not a valid frontend document; names the file and field.</exception>
    public static FrontendInfo Parse(ReadOnlyMemory<byte> utf8, string fileName)
    {
        ArgumentNullException.ThrowIfNull(fileName);
        using var doc = CompatJsonReader.ParseDocument(utf8, fileName, CompatJsonReader.Plain);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("format", out var f) || f.ValueKind != JsonValueKind.String || f.GetString() != FormatName)
        {
            throw new CompatDocumentException(fileName, "$.format", $"not a frontend document (expected \"{FormatName}\")");
        }

        var json = CompatJsonReader.Deserialize(root, CompatJsonContext.Default.FrontendDocumentJson, fileName, "$", CompatJsonReader.Plain);
        if (json.Version != 1)
        {
            throw new CompatDocumentException(fileName, "$.version", $"unsupported frontend document version {json.Version} (this SDK reads 1)");
        }

        return From(new FrontendJson { Product = json.Product, ProductVersion = json.ProductVersion, Machine = json.Machine, Machines = json.Machines }, fileName, "$", CompatJsonReader.Plain);
    }

    /// <summary>Reads and parses a frontend document file.</summary>
    /// <exception cref="CompatDocumentException">Not a valid frontend document.</exception>
    public static FrontendInfo Load(string path) => Parse(CompatJsonReader.ReadFile(path, CompatJsonReader.Plain), path);

    /// <summary>The member embedded in records and capability documents.</summary>
    internal FrontendJson ToJsonModel() => new() { Product = Product, ProductVersion = Version, Machine = Machine, Machines = [.. Machines] };

    /// <summary>Validates an embedded or parsed frontend object.</summary>
    internal static FrontendInfo From(FrontendJson json, string fileName, string path, Func<string, string?, string, Exception?, CompatDocumentException> error)
    {
        if (json.Machines.Count > MaxMachines)
        {
            throw error(fileName, path + ".machines", $"{json.Machines.Count} entries, more than {MaxMachines}", null);
        }

        // Only "machine" may be null: System.Text.Json does not enforce the non-null elements of "machines".
        foreach (var (field, value, optional) in new[] { ("product", json.Product, false), ("product-version", json.ProductVersion, false), ("machine", json.Machine, true) }
                     .Concat(json.Machines.Select(m => ("machines", (string?)m, false))))
        {
            if (!(optional && value is null) && !IsValidName(value))
            {
                throw error(fileName, $"{path}.{field}", value is null ? "is null" : $"'{value}' is not a name of 1..64 letters, digits, '.', '_', '-' or '+'", null);
            }
        }

        return new FrontendInfo(json.Product, json.ProductVersion, json.Machine, json.Machines);
    }

    private static bool IsValidName(string? s) =>
        s is { Length: >= 1 and <= 64 } && s.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-' or '+');

    private static string Checked(string value, string param) =>
        IsValidName(value) ? value : throw new ArgumentException($"'{value}' is not a name of 1..64 letters, digits, '.', '_', '-' or '+'", param);
}
