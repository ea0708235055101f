using System.Globalization;
using System.Text.Json.Nodes;
using VhostCompat.Compat;

namespace VhostCompat.Tests.Compat;

/// <summary>
/// The QMP answers of a real QEMU 7.2 (Debian 12's qemu-system-x86_64, Data/qemu-7.2-x86_64.qmp.json): its greeting
/// and its replies to qmp_capabilities, query-version and query-machines. Expected values are derived from it here,
/// independently of the SDK's QMP client.
/// </summary>
internal static class QemuCapture
{
    public static JsonObject Load() =>
        JsonNode.Parse(File.ReadAllText(CapabilityDocumentTests.FindRepoFile("tests/VhostCompat.Tests/Compat/Data/qemu-7.2-x86_64.qmp.json")))!.AsObject();

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

    /// <summary>
    /// A newer QEMU for the VM side, made up from the capture (no newer one is captured): version
    /// <paramref name="version"/> (major.minor.micro) and its own machine types added to the captured ones.
    /// </summary>
    public static JsonObject Newer(string version, params string[] newMachines)
    {
        var capture = Load();
        int[] v = [.. version.Split('.').Select(p => int.Parse(p, CultureInfo.InvariantCulture))];
        var qemu = capture["replies"]!["query-version"]!["return"]!["qemu"]!;
        (qemu["major"], qemu["minor"], qemu["micro"]) = (v[0], v[1], v[2]);
        var machines = capture["replies"]!["query-machines"]!["return"]!.AsArray();
        foreach (string m in newMachines)
        {
            machines.Add(new JsonObject { ["name"] = m, ["deprecated"] = false });
        }

        return capture;
    }

    /// <summary>The captured QEMU as a destination host's frontend.</summary>
    public static FrontendInfo Host()
    {
        var capture = Load();
        return new FrontendInfo("qemu", Version(capture), null, Machines(capture));
    }
}
