using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Fuzz.Targets;

/// <summary>
/// The parsers of persisted and exchanged compatibility data. Byte 0 picks the parser, byte 1 the
/// device type a value list is parsed for (bit 7: keep a mutated record checksum); the rest is the text. Documented rejections:
/// <see cref="ProfileFormatException"/> (value lists, catalog ids),
/// <see cref="AckedStateCorruptException"/> (acked-state records) and
/// <see cref="CompatDocumentException"/> (capability documents, lock files). Whatever parses must
/// survive its own round trip: rendered again and re-parsed, it is accepted and means the same.
/// </summary>
internal sealed partial class CompatTarget : IFuzzTarget
{
    public const byte Profile = 0;
    public const byte Record = 1;
    public const byte Capabilities = 2;
    public const byte Lock = 3;
    public const byte Catalog = 4;
    private const string File = "fuzz.json";

    private static readonly VirtioDeviceType?[] Types = [null, VirtioDeviceType.Net, VirtioDeviceType.Block, VirtioDeviceType.Rng, VirtioDeviceType.Console, (VirtioDeviceType)0xFFFF];
    private readonly ProfileCatalog _catalog = CompatSeeds.NetCatalog();

    public string Name => "compat";

    /// <summary>Whether the last input was accepted by its parser.</summary>
    public bool LastAccepted { get; private set; }

    public int Reached => LastAccepted ? 1 : 0;

    public void Execute(ReadOnlySpan<byte> input)
    {
        LastAccepted = false;
        if (input.Length < 2)
        {
            return;
        }

        var type = Types[input[1] % Types.Length];
        var body = input[2..].ToArray();
        switch (input[0] % 5)
        {
            case Profile:
                ParseProfile(Encoding.UTF8.GetString(body), type);
                break;
            case Record:
                ParseRecord((input[1] & 0x80) == 0 ? Resign(body) : body);
                break;
            case Capabilities:
                ParseCapabilities(body);
                break;
            case Lock:
                ParseLock(body);
                break;
            default:
                ResolvePin(Encoding.UTF8.GetString(body));
                break;
        }
    }

    private void ParseProfile(string text, VirtioDeviceType? type)
    {
        InterfaceProfile p;
        try
        {
            p = InterfaceProfile.Parse(text, type);
        }
        catch (ProfileFormatException)
        {
            return;
        }

        LastAccepted = true;
        Expect(InterfaceProfile.Parse(p.Canonical, p.DeviceType).SameInterface(p), $"profile {p.Canonical} does not survive its canonical form");
        _ = InterfaceProfile.TryParse(text, type, out _, out _);
    }

    private void ParseRecord(byte[] body)
    {
        AckedStateRecord r;
        try
        {
            r = AckedStateRecord.Parse(body, File);
        }
        catch (AckedStateCorruptException)
        {
            return;
        }

        LastAccepted = true;
        var again = AckedStateRecord.Parse(Encoding.UTF8.GetBytes(r.ToJson()), File);
        Expect(again.ToJson() == r.ToJson(), "acked-state record changes across a round trip");
    }

    /// <summary>
    /// Rewrites the record's sha256 to match its payload, so mutants reach the payload checks
    /// instead of all stopping at the checksum (byte 1 bit 7 set leaves the checksum as mutated).
    /// </summary>
    private static byte[] Resign(byte[] body)
    {
        string? payload;
        try
        {
            using var doc = JsonDocument.Parse(body);
            payload = doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("payload", out var p) ? p.GetRawText() : null;
        }
        catch (Exception ex) when (ex is JsonException or InvalidOperationException)
        {
            return body;
        }

        if (payload is null)
        {
            return body;
        }

        string text = Encoding.UTF8.GetString(body);
        string sha = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(payload)));
        return Encoding.UTF8.GetBytes(ShaMember().Replace(text, $"\"sha256\":\"{sha}\"", 1));
    }

    [GeneratedRegex("\"sha256\"\\s*:\\s*\"[^\"]*\"")]
    private static partial Regex ShaMember();

    private void ParseCapabilities(byte[] body)
    {
        BackendCapabilities c;
        try
        {
            c = CapabilityDocument.Parse(body, File);
        }
        catch (CompatDocumentException)
        {
            return;
        }

        LastAccepted = true;
        string rendered = CapabilityDocument.Render(c);
        Expect(CapabilityDocument.Render(CapabilityDocument.Parse(Encoding.UTF8.GetBytes(rendered), File)) == rendered, "capability document changes across a round trip");
    }

    private void ParseLock(byte[] body)
    {
        ProfileLock l;
        try
        {
            l = ProfileLock.Parse(body, File);
        }
        catch (CompatDocumentException)
        {
            return;
        }

        LastAccepted = true;
        string json = l.ToJson();
        Expect(ProfileLock.Parse(Encoding.UTF8.GetBytes(json), File).ToJson() == json, "lock file changes across a round trip");
    }

    private void ResolvePin(string text)
    {
        _ = ProtocolFeatureNames.TryParse(text, out _, out _);
        try
        {
            _ = _catalog.Resolve(text);
            LastAccepted = true;
        }
        catch (ProfileFormatException)
        {
        }
    }

    private static void Expect(bool condition, string message)
    {
        if (!condition)
        {
            throw new FuzzFailureException(message);
        }
    }

    public IEnumerable<(string Name, byte[] Data)> Seeds() => CompatSeeds.All();

    public void Dispose()
    {
    }
}
