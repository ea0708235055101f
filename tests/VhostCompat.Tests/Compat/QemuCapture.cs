using System.Globalization;
using System.Text.Json.Nodes;
using VhostCompat.Compat;

namespace VhostCompat.Tests.Compat;

/// <summary>
/// QMP answers of real hypervisors (Data/*.qmp.json), each running a VM started with <c>-machine q35 -S</c>: the
/// greeting and the replies to qmp_capabilities, query-version, query-machines and <c>qom-get /machine type</c>.
/// Expected values are derived from them here, independently of the SDK's QMP client.
/// </summary>
internal static class QemuCapture
{
    /// <summary>Debian 12's qemu-system-x86_64 7.2.</summary>
    public static JsonObject Qemu72() => Load("qemu-7.2-x86_64.qmp.json");

    /// <summary>QEMU 10.0.2 from bookworm-backports.</summary>
    public static JsonObject Qemu100() => Load("qemu-10.0-x86_64.qmp.json");

    /// <summary>"major.minor.micro" of the query-version reply.</summary>
    public static string Version(JsonObject capture)
    {
        var q = capture["replies"]!["query-version"]!["return"]!["qemu"]!;
        return string.Create(CultureInfo.InvariantCulture, $"{(int)q["major"]!}.{(int)q["minor"]!}.{(int)q["micro"]!}");
    }

    /// <summary>Every name and alias of the query-machines reply, in reply order.</summary>
    public static IReadOnlyList<string> Machines(JsonObject capture) =>
        capture["replies"]!["query-machines"]!["return"]!.AsArray()
            .SelectMany(m => new[] { (string?)m!["name"], (string?)m["alias"] })
            .OfType<string>()
            .ToList();

    /// <summary>The captured VM's machine type: the QOM type name of /machine without its "-machine" suffix.</summary>
    public static string VmMachine(JsonObject capture)
    {
        string type = (string)capture["replies"]!["qom-get"]!["return"]!;
        return type.EndsWith("-machine", StringComparison.Ordinal) ? type[..^"-machine".Length] : throw new InvalidDataException(type);
    }

    /// <summary>The captured QEMU (7.2 by default) as a destination host's frontend.</summary>
    public static FrontendInfo Host(JsonObject? capture = null)
    {
        capture ??= Qemu72();
        return new FrontendInfo("qemu", Version(capture), null, Machines(capture));
    }

    private static JsonObject Load(string file) =>
        JsonNode.Parse(File.ReadAllText(CapabilityDocumentTests.FindRepoFile("tests/VhostCompat.Tests/Compat/Data/" + file)))!.AsObject();
}
