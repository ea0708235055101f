using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Cli;

/// <summary><c>features decode|encode</c>.</summary>
internal static class FeatureCommands
{
    public static int Decode(CliIo io, string type, string value, bool protocol, bool json)
    {
        ulong mask = CliSupport.ParseMask(value);
        if (protocol)
        {
            var names = ProtocolFeatureNames.Format(mask);
            io.Out.WriteLine(json
                ? CliSupport.Json(w => { w.WriteStartObject(); w.WriteString("value", CliSupport.Hex(mask)); CliSupport.WriteStrings(w, "names", names); w.WriteEndObject(); })
                : $"{CliSupport.Hex(mask)} = {string.Join(',', names)}");
            return ExitCodes.Ok;
        }

        var dt = CliSupport.ParseType(type);
        var violations = VirtioFeatures.CheckDependencies(dt, mask & ~VirtioFeatures.VhostOnlyMask);
        if (json)
        {
            io.Out.WriteLine(CliSupport.Json(w =>
            {
                w.WriteStartObject();
                w.WriteString("type", type);
                w.WriteString("value", CliSupport.Hex(mask));
                CliSupport.WriteStrings(w, "names", VirtioFeatures.Names(dt, mask));
                CliSupport.WriteStrings(w, "dependency-violations", violations.Select(v => v.Message));
                w.WriteEndObject();
            }));
            return ExitCodes.Ok;
        }

        io.Out.WriteLine($"{CliSupport.Hex(mask)} = {VirtioFeatures.Format(dt, mask)}");
        for (int bit = 0; bit < 64; bit++)
        {
            if ((mask & (1UL << bit)) != 0)
            {
                var f = VirtioFeatures.Find(dt, bit);
                io.Out.WriteLine($"  {bit,2}  {f?.Name ?? VirtioFeatures.NameOf(dt, bit),-22} {f?.SpecName ?? "(unknown)"}");
            }
        }

        foreach (var v in violations)
        {
            io.Out.WriteLine($"  note: {v.Message} (virtio dependency rule, as a guest would see it)");
        }

        return ExitCodes.Ok;
    }

    public static int Encode(CliIo io, string type, string names, bool protocol, bool json)
    {
        ulong mask;
        IReadOnlyList<string> canonical;
        if (protocol)
        {
            if (!ProtocolFeatureNames.TryParse(names, out mask, out string? error))
            {
                throw new CliException(error!);
            }

            canonical = ProtocolFeatureNames.Format(mask);
        }
        else
        {
            var dt = CliSupport.ParseType(type);
            if (!VirtioFeatures.TryParse(dt, names, out mask, out string? error))
            {
                throw new CliException(error!);
            }

            canonical = VirtioFeatures.Names(dt, mask);
        }

        io.Out.WriteLine(json
            ? CliSupport.Json(w => { w.WriteStartObject(); w.WriteString("value", CliSupport.Hex(mask)); CliSupport.WriteStrings(w, "names", canonical); w.WriteEndObject(); })
            : CliSupport.Hex(mask));
        return ExitCodes.Ok;
    }
}
