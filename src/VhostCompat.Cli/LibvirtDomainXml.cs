using System.Text;
using System.Xml;
using System.Xml.Linq;
using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Cli;

/// <summary>A vhost-user device of a libvirt domain: an <c>&lt;interface type='vhostuser'&gt;</c> or a <c>&lt;disk type='vhostuser'&gt;</c>.</summary>
/// <param name="Kind"><c>interface</c> or <c>disk</c>.</param>
/// <param name="Type">net for interfaces, block for disks.</param>
/// <param name="Mac">The interface's MAC address (lower case), or null.</param>
/// <param name="Target">The disk's target device (<c>vdb</c>), or null.</param>
/// <param name="Socket">The vhost-user socket path, or null when the XML has none.</param>
/// <param name="QemuIsServer">True for <c>mode='server'</c>: QEMU listens and the backend connects.</param>
/// <param name="Alias">libvirt's alias (<c>net0</c>, <c>ua-net0</c>), or null.</param>
internal sealed record VhostUserDomainDevice(string Kind, VirtioDeviceType Type, string? Mac, string? Target, string? Socket, bool QemuIsServer, string? Alias)
{
    /// <summary>How messages name the device: "interface 52:54:00:12:34:56 (net0)".</summary>
    public string Label =>
        $"{Kind} {Mac ?? Target ?? Socket ?? "?"}" + (Alias is null ? string.Empty : $" ({Alias})");

    /// <summary>True when the metadata entry describes this device: by MAC (interface) or target (disk), else by socket.</summary>
    public bool Matches(DeviceAnnotation a) =>
        a.Kind == Kind && (Kind == "interface" && Mac is not null && a.Mac is not null ? a.Mac == Mac
            : Kind == "disk" && Target is not null && a.Target is not null ? a.Target == Target
            : Socket is not null && a.Socket == Socket);

    /// <summary>True when <paramref name="selector"/> (a MAC, a target, a socket path or an alias) names this device.</summary>
    public bool IsSelectedBy(string selector) =>
        string.Equals(selector, Mac, StringComparison.OrdinalIgnoreCase) || selector == Target || selector == Socket || selector == Alias;
}

/// <summary>One device entry of the VhostCompat metadata: the pinned profile and the acked-state record key.</summary>
internal sealed record DeviceAnnotation(string Kind, string? Mac, string? Target, string? Socket, string Key, InterfaceProfile Profile);

/// <summary>
/// Reading and writing libvirt domain XML safely: no DTD, no entities, no external resources, bounded size; and the
/// VhostCompat element under <c>&lt;metadata&gt;</c>:
/// <c>&lt;vhostcompat:devices xmlns:vhostcompat="https://vhostcompat.org/xmlns/libvirt/1" version="1"&gt;</c> with one
/// <c>&lt;vhostcompat:device kind= mac=|target= socket= key=&gt;&lt;vhostcompat:profile id= type=&gt;CANONICAL&lt;/…&gt;&lt;/…&gt;</c> per device.
/// </summary>
internal static class LibvirtDomainXml
{
    /// <summary>The namespace of the metadata element (version 1).</summary>
    public const string Namespace = "https://vhostcompat.org/xmlns/libvirt/1";

    /// <summary>Namespaces starting with this are ours; any other version than <see cref="Namespace"/> is refused, not ignored.</summary>
    public const string NamespaceBase = "https://vhostcompat.org/xmlns/libvirt/";

    /// <summary>The prefix written for the namespace.</summary>
    public const string Prefix = "vhostcompat";

    /// <summary>Largest domain XML accepted (libvirt's own are a few KiB; 4 MiB bounds a hostile input).</summary>
    public const int MaxBytes = 4 << 20;

    private static readonly XNamespace Ns = Namespace;

    /// <summary>Parses domain XML; DTDs (and so entities) are refused, nothing is resolved, the size is bounded.</summary>
    /// <exception cref="CliException">Not well-formed, too large, has a DTD, or is not a domain.</exception>
    public static XDocument Load(ReadOnlySpan<byte> utf8, string label)
    {
        if (utf8.Length > MaxBytes)
        {
            throw new CliException($"{label}: domain XML is {utf8.Length} bytes, more than {MaxBytes}");
        }

        var settings = new XmlReaderSettings
        {
            DtdProcessing = DtdProcessing.Prohibit,
            XmlResolver = null,
            MaxCharactersInDocument = MaxBytes,
            MaxCharactersFromEntities = 0,
            IgnoreProcessingInstructions = false,
        };
        try
        {
            using var reader = XmlReader.Create(new MemoryStream(utf8.ToArray()), settings);
            var doc = XDocument.Load(reader, LoadOptions.PreserveWhitespace);
            if (doc.Root is not { Name.LocalName: "domain" } root || root.Name.Namespace != XNamespace.None)
            {
                throw new CliException($"{label}: not a libvirt domain (root element <{doc.Root?.Name.LocalName}>)");
            }

            return doc;
        }
        catch (XmlException ex)
        {
            throw new CliException($"{label}: not well-formed domain XML: {ex.Message}");
        }
    }

    /// <summary>Reads a file, or stdin for <c>-</c>, refusing more than <see cref="MaxBytes"/> (stdin is read only that far).</summary>
    public static byte[] ReadInput(string path, Func<Stream> stdin)
    {
        try
        {
            using var s = path == "-" ? stdin() : File.OpenRead(path);
            var buffer = new byte[MaxBytes + 1];
            int n = 0, read;
            while (n < buffer.Length && (read = s.Read(buffer, n, buffer.Length - n)) > 0)
            {
                n += read;
            }

            return n > MaxBytes
                ? throw new CliException($"{CliSupport.Label(path)}: domain XML larger than {MaxBytes} bytes")
                : buffer.AsSpan(0, n).ToArray();
        }
        catch (FileNotFoundException)
        {
            throw new CliException($"{path}: no such file");
        }
        catch (IOException ex)
        {
            throw new CliException($"{CliSupport.Label(path)}: {ex.Message}");
        }
        catch (UnauthorizedAccessException ex)
        {
            throw new CliException($"{CliSupport.Label(path)}: {ex.Message}");
        }
    }

    /// <summary>The domain's name (<c>&lt;name&gt;</c>), or null.</summary>
    public static string? DomainName(XDocument doc) => doc.Root!.Element("name")?.Value.Trim();

    /// <summary>Every vhost-user interface and disk, in document order.</summary>
    public static IReadOnlyList<VhostUserDomainDevice> Devices(XDocument doc)
    {
        var list = new List<VhostUserDomainDevice>();
        foreach (var e in doc.Root!.Element("devices")?.Elements() ?? [])
        {
            if ((string?)e.Attribute("type") != "vhostuser" || e.Name.LocalName is not ("interface" or "disk"))
            {
                continue;
            }

            var source = e.Element("source");
            bool disk = e.Name.LocalName == "disk";
            list.Add(new VhostUserDomainDevice(
                e.Name.LocalName,
                disk ? VirtioDeviceType.Block : VirtioDeviceType.Net,
                disk ? null : ((string?)e.Element("mac")?.Attribute("address"))?.ToLowerInvariant(),
                disk ? (string?)e.Element("target")?.Attribute("dev") : null,
                (string?)source?.Attribute("path"),
                (string?)source?.Attribute("mode") == "server",
                (string?)e.Element("alias")?.Attribute("name")));
        }

        return list;
    }

    /// <summary>
    /// The VhostCompat metadata entries, or an empty list when the domain has none.
    /// </summary>
    /// <exception cref="CliException">An element in a VhostCompat namespace is malformed or of another version.</exception>
    public static IReadOnlyList<DeviceAnnotation> Annotations(XDocument doc)
    {
        var element = FindElement(doc);
        if (element is null)
        {
            return [];
        }

        var result = new List<DeviceAnnotation>();
        foreach (var d in element.Elements())
        {
            if (d.Name != Ns + "device")
            {
                throw Malformed($"unexpected element <{d.Name.LocalName}> in <{Prefix}:devices>");
            }

            string kind = Attr(d, "kind");
            if (kind is not ("interface" or "disk"))
            {
                throw Malformed($"device kind '{kind}' (interface or disk)");
            }

            string? mac = ((string?)d.Attribute("mac"))?.ToLowerInvariant();
            string? target = (string?)d.Attribute("target");
            string? socket = (string?)d.Attribute("socket");
            if (mac is null && target is null && socket is null)
            {
                throw Malformed($"a {kind} entry names no mac, target or socket");
            }

            string key = Attr(d, "key");
            if (!AckedStateStore.IsValidKey(key))
            {
                throw Malformed($"'{key}' is not a valid record key");
            }

            var p = d.Element(Ns + "profile") ?? throw Malformed($"the {kind} entry for key '{key}' has no <{Prefix}:profile>");
            string? id = (string?)p.Attribute("id");
            var type = kind == "disk" ? VirtioDeviceType.Block : VirtioDeviceType.Net;
            InterfaceProfile profile;
            try
            {
                profile = InterfaceProfile.Parse(p.Value.Trim(), type);
                if (id is not null)
                {
                    profile = InterfaceProfile.IsValidId(id) ? profile.WithId(id) : throw Malformed($"'{id}' is not a valid profile id");
                }
            }
            catch (ProfileFormatException ex)
            {
                throw Malformed($"the profile of key '{key}': {ex.Message}");
            }

            result.Add(new DeviceAnnotation(kind, mac, target, socket, key, profile));
        }

        return result;
    }

    /// <summary>Sets the entries (replacing the whole VhostCompat element in place, or adding it, and <c>&lt;metadata&gt;</c> when absent).</summary>
    public static void SetAnnotations(XDocument doc, IReadOnlyList<DeviceAnnotation> annotations)
    {
        var root = doc.Root!;
        var metadata = root.Element("metadata");
        string indent = IndentOf(root.Elements().FirstOrDefault()) ?? "  ";
        if (metadata is null)
        {
            metadata = new XElement("metadata");
            var after = root.Elements().LastOrDefault(e => e.Name.LocalName is "name" or "uuid" or "genid" or "title" or "description");
            if (after is null)
            {
                root.AddFirst(new XText("\n" + indent), metadata);
            }
            else
            {
                after.AddAfterSelf(new XText("\n" + indent), metadata);
            }
        }

        var inner = indent + indent;
        var element = new XElement(Ns + "devices", new XAttribute(XNamespace.Xmlns + Prefix, Namespace), new XAttribute("version", "1"));
        foreach (var a in annotations)
        {
            var d = new XElement(Ns + "device", new XAttribute("kind", a.Kind));
            if (a.Mac is not null)
            {
                d.Add(new XAttribute("mac", a.Mac));
            }

            if (a.Target is not null)
            {
                d.Add(new XAttribute("target", a.Target));
            }

            if (a.Socket is not null)
            {
                d.Add(new XAttribute("socket", a.Socket));
            }

            d.Add(new XAttribute("key", a.Key));
            var p = new XElement(Ns + "profile");
            if (a.Profile.Id is not null)
            {
                p.Add(new XAttribute("id", a.Profile.Id));
            }

            p.Add(a.Profile.Canonical);
            d.Add(new XText("\n" + inner + indent + indent), p, new XText("\n" + inner + indent));
            element.Add(new XText("\n" + inner + indent), d);
        }

        element.Add(new XText("\n" + inner));
        var existing = FindElement(doc);
        if (existing is not null)
        {
            existing.ReplaceWith(element);
            return;
        }

        if (!metadata.Nodes().Any())
        {
            metadata.Add(new XText("\n" + inner), element, new XText("\n" + indent));
        }
        else
        {
            var last = metadata.Nodes().LastOrDefault(n => n is not XText);
            if (last is null)
            {
                metadata.AddFirst(new XText("\n" + inner), element);
            }
            else
            {
                last.AddAfterSelf(new XText("\n" + inner), element);
            }
        }
    }

    /// <summary>The document as UTF-8 text, with an XML declaration only when the input had one.</summary>
    public static string Save(XDocument doc)
    {
        var sb = new StringBuilder();
        var settings = new XmlWriterSettings { OmitXmlDeclaration = doc.Declaration is null, Indent = false, NewLineHandling = NewLineHandling.None, Encoding = new UTF8Encoding(false) };
        using (var w = XmlWriter.Create(new StringWriter(sb), settings))
        {
            doc.Save(w);
        }

        var text = sb.ToString();
        if (doc.Declaration is not null)
        {
            // StringWriter reports UTF-16; the bytes written are UTF-8.
            text = text.Replace("encoding=\"utf-16\"", "encoding=\"UTF-8\"", StringComparison.OrdinalIgnoreCase);
        }

        return text.EndsWith('\n') ? text : text + "\n";
    }

    private static XElement? FindElement(XDocument doc)
    {
        var metadata = doc.Root!.Element("metadata");
        if (metadata is null)
        {
            return null;
        }

        XElement? found = null;
        foreach (var e in metadata.Elements())
        {
            string ns = e.Name.NamespaceName;
            if (ns == Namespace)
            {
                if (e.Name.LocalName != "devices" || found is not null)
                {
                    throw Malformed(found is not null ? "more than one <devices> element" : $"unexpected element <{e.Name.LocalName}> (expected <{Prefix}:devices>)");
                }

                if ((string?)e.Attribute("version") is { } v && v != "1")
                {
                    throw Malformed($"version '{v}' (this tool reads version 1)");
                }

                found = e;
            }
            else if (ns.StartsWith(NamespaceBase, StringComparison.Ordinal))
            {
                throw Malformed($"namespace '{ns}' is not one this tool reads ({Namespace})");
            }
        }

        return found;
    }

    private static string Attr(XElement e, string name) =>
        (string?)e.Attribute(name) is { Length: > 0 } v ? v : throw Malformed($"<{Prefix}:{e.Name.LocalName}> has no {name}=");

    private static CliException Malformed(string what) => new($"VhostCompat metadata: {what}");

    private static string? IndentOf(XElement? e) =>
        e?.PreviousNode is XText t && t.Value.LastIndexOf('\n') is int i and >= 0 ? t.Value[(i + 1)..] : null;
}
