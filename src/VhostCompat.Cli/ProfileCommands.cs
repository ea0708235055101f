using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Cli;

/// <summary><c>profile parse|format|diff</c>.</summary>
internal static class ProfileCommands
{
    public static InterfaceProfile Resolve(string text, string? type, string? capsPath)
    {
        VirtioDeviceType? dt = type is null ? null : CliSupport.ParseType(type);
        ProfileCatalog? catalog = null;
        if (capsPath is not null)
        {
            var caps = CliSupport.LoadCaps(capsPath);
            catalog = caps.Catalog ?? throw new CliException($"{capsPath}: the capability document publishes no profile catalog");
            if (dt is { } t && t != caps.DeviceType)
            {
                throw new CliException($"--type {type} disagrees with {capsPath} ({CapabilityDocument.TypeName(caps.DeviceType)})");
            }
        }

        try
        {
            if (InterfaceProfile.IsValueList(text))
            {
                return catalog is not null ? catalog.Resolve(text) : InterfaceProfile.Parse(text, dt);
            }

            if (catalog is null)
            {
                throw new CliException($"'{text}' is a profile id; give --caps with the backend's capability document to resolve it, or a value list (key=value,...)");
            }

            return catalog.Resolve(text);
        }
        catch (ProfileFormatException ex)
        {
            throw new CliException($"invalid profile: {ex.Message}");
        }
    }

    public static int Parse(CliIo io, string text, string? type, string? caps, bool json)
    {
        var p = Resolve(text, type, caps);
        if (json)
        {
            io.Out.WriteLine(CliSupport.Json(w => CliSupport.WriteProfile(w, p)));
            return ExitCodes.Ok;
        }

        if (p.Id is not null)
        {
            io.Out.WriteLine($"id: {p.Id}");
        }

        foreach (var kv in p.Values())
        {
            io.Out.WriteLine($"  {kv.Key}={kv.Value}");
        }

        return ExitCodes.Ok;
    }

    public static int Format(CliIo io, string text, string? type, string? caps, bool json)
    {
        var p = Resolve(text, type, caps);
        io.Out.WriteLine(json ? CliSupport.Json(w => CliSupport.WriteProfile(w, p)) : p.Canonical);
        return ExitCodes.Ok;
    }

    public static int Diff(CliIo io, string a, string b, string? type, string? caps, bool json)
    {
        var pa = Resolve(a, type, caps);
        var pb = Resolve(b, type, caps);
        if (pa.DeviceType != pb.DeviceType)
        {
            throw new CliException($"the profiles are for different device types ({CapabilityDocument.TypeName(pa.DeviceType)}, {CapabilityDocument.TypeName(pb.DeviceType)})");
        }

        var diff = pa.Diff(pb);
        if (json)
        {
            io.Out.WriteLine(CliSupport.Json(w =>
            {
                w.WriteStartObject();
                w.WriteBoolean("same", diff.Count == 0);
                w.WriteStartArray("differences");
                foreach (var (key, left, right) in diff)
                {
                    w.WriteStartObject();
                    w.WriteString("key", key);
                    w.WriteString("a", left);
                    w.WriteString("b", right);
                    w.WriteEndObject();
                }

                w.WriteEndArray();
                w.WriteEndObject();
            }));
        }
        else if (diff.Count == 0)
        {
            io.Out.WriteLine("same interface");
        }
        else
        {
            foreach (var (key, left, right) in diff)
            {
                io.Out.WriteLine($"{key}: {left} -> {right}");
            }
        }

        return diff.Count == 0 ? ExitCodes.Ok : ExitCodes.No;
    }
}
