using System.Globalization;
using System.Text;
using System.Text.Json;
using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Cli;

/// <summary>Exit codes of every command.</summary>
internal static class ExitCodes
{
    /// <summary>Success / compatible / same.</summary>
    public const int Ok = 0;

    /// <summary>A negative answer: incompatible, different, lock violated.</summary>
    public const int No = 1;

    /// <summary>Unusable input or an environment failure (bad file, bad argument, socket error).</summary>
    public const int Error = 2;
}

/// <summary>A user-facing failure: the message is printed to stderr and the command exits with 2.</summary>
internal sealed class CliException(string message) : Exception(message)
{
}

/// <summary>Writers a command prints to.</summary>
internal sealed record CliIo(TextWriter Out, TextWriter Err);

internal static class CliSupport
{
    public static VirtioDeviceType ParseType(string text) => VirtioDeviceTypes.TryParse(text, out VirtioDeviceType type)
        ? type
        : throw new CliException($"unknown device type '{text}' ({string.Join(", ", VirtioDeviceTypes.Names)})");

    /// <summary>The <c>--type</c> values every command accepts.</summary>
    public static string[] TypeNames => [.. VirtioDeviceTypes.Names];

    public static string Hex(ulong v) => "0x" + v.ToString("x", CultureInfo.InvariantCulture);

    public static ulong ParseMask(string text)
    {
        text = text.Trim();
        bool ok = text.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
            ? ulong.TryParse(text.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong v)
            : ulong.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out v);
        return ok ? v : throw new CliException($"'{text}' is not a 64-bit value (0x-prefixed hex or decimal)");
    }

    public static byte[] ReadInput(string path)
    {
        try
        {
            if (path == "-")
            {
                using var stdin = Console.OpenStandardInput();
                using var ms = new MemoryStream();
                stdin.CopyTo(ms);
                return ms.ToArray();
            }

            var info = new FileInfo(path);
            if (!info.Exists)
            {
                throw new CliException($"{path}: no such file");
            }

            if (info.Length > 1 << 20)
            {
                throw new CliException($"{path}: file is {info.Length} bytes, more than 1 MiB");
            }

            return File.ReadAllBytes(path);
        }
        catch (IOException ex)
        {
            throw new CliException($"{path}: {ex.Message}");
        }
        catch (UnauthorizedAccessException ex)
        {
            throw new CliException($"{path}: {ex.Message}");
        }
    }

    public static string Label(string path) => path == "-" ? "<stdin>" : path;

    public static BackendCapabilities LoadCaps(string path) => CapabilityDocument.Parse(ReadInput(path), Label(path));

    public static string Json(Action<Utf8JsonWriter> write)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            write(w);
        }

        return Encoding.UTF8.GetString(ms.ToArray());
    }

    public static void WriteStrings(Utf8JsonWriter w, string name, IEnumerable<string> values)
    {
        w.WriteStartArray(name);
        foreach (string v in values)
        {
            w.WriteStringValue(v);
        }

        w.WriteEndArray();
    }

    public static void WriteProfile(Utf8JsonWriter w, InterfaceProfile p)
    {
        w.WriteStartObject();
        if (p.Id is not null)
        {
            w.WriteString("id", p.Id);
        }

        w.WriteString("canonical", p.Canonical);
        w.WriteStartObject("values");
        foreach (var kv in p.Values())
        {
            w.WriteString(kv.Key, kv.Value);
        }

        w.WriteEndObject();
        w.WriteEndObject();
    }
}
