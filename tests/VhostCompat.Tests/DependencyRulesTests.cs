using System.Reflection;
using System.Text.RegularExpressions;

namespace VhostCompat.Tests;

/// <summary>
/// The layering of the library (docs/architecture.md), checked on the source: every file's references to the
/// library's namespaces (using directives, fully qualified names, and names qualified by a namespace the file can
/// reach, such as <c>Protocol.FrontendRequest</c>) must be allowed for the folder it sits in, and the folders must
/// not form a cycle. A scan of the text rather than of IL, because references inside one assembly are not recorded
/// as references in its metadata.
/// </summary>
public sealed partial class DependencyRulesTests
{
    /// <summary>What each part may use (besides itself and the shared Log/Metrics of the root namespace).</summary>
    private static readonly Dictionary<string, string[]> Allowed = new()
    {
        ["Interop"] = [],
        ["Virtio"] = [],
        ["Protocol"] = ["Interop", "Virtio"],
        ["Memory"] = ["Interop", "Protocol", "Virtio"],
        ["Queues"] = ["Interop", "Memory", "Virtio"],
        ["Compat"] = ["Virtio"],
        ["Backend"] = ["Interop", "Protocol", "Memory", "Queues", "Virtio", "Compat"],
        ["Frontend"] = ["Interop", "Protocol", "Virtio", "Compat"],
        ["Proxy"] = ["Interop", "Protocol", "Virtio", "Compat", "Frontend"],
        ["(root)"] = [],
        ["Hosting"] = ["Backend", "Compat", "Virtio"],
        ["Samples"] = ["Backend", "Queues", "Virtio", "Compat", "Hosting"],
    };

    /// <summary>The storage part of Compat: the one place it touches the file system through Interop (fsync of a directory).</summary>
    private static readonly Dictionary<string, string[]> FileExceptions = new()
    {
        ["src/VhostCompat/Compat/AtomicFile.cs"] = ["Interop"],
    };

    private static readonly string[] Parts = ["Interop", "Virtio", "Protocol", "Memory", "Queues", "Compat", "Backend", "Frontend", "Proxy", "Hosting"];

    [Fact]
    public void Every_file_references_only_the_parts_its_folder_may_use()
    {
        var violations = new List<string>();
        foreach (var (file, part, refs) in Scan())
        {
            string[] allowed = [.. Allowed[part], .. FileExceptions.GetValueOrDefault(file, [])];
            violations.AddRange(refs.Where(r => r != part && !allowed.Contains(r)).Select(r => $"{file} ({part}) uses {r}"));
        }

        violations.Should().BeEmpty("the layering rules of docs/architecture.md hold");
    }

    [Fact]
    public void The_parts_form_no_cycle()
    {
        var graph = new Dictionary<string, HashSet<string>>();
        foreach (var (_, part, refs) in Scan())
        {
            var edges = graph.TryGetValue(part, out var e) ? e : graph[part] = [];
            edges.UnionWith(refs.Where(r => r != part));
        }

        FindCycle(graph).Should().BeNull("folders depend on each other in one direction only");
    }

    [Fact]
    public void The_scan_sees_every_kind_of_reference()
    {
        // The scanner itself: a using, a fully qualified name and a namespace-qualified name are each found, a
        // property that happens to share a namespace's name (Queues.ToString()) is not.
        var refs = References("using VhostCompat.Memory;\nvar x = VhostCompat.Interop.Libc.EAGAIN;\nvar y = Protocol.FrontendRequest.GetFeatures;\nint q = Queues.ToString().Length;");
        refs.Should().BeEquivalentTo(["Memory", "Interop", "Protocol"]);
    }

    [Fact]
    public void The_wire_layer_exports_nothing()
    {
        typeof(VhostCompat.Backend.VhostUserBackend).Assembly.GetExportedTypes().Where(t => t.Namespace is "VhostCompat.Protocol" or "VhostCompat.Interop" or "VhostCompat.Memory")
            .Should().BeEmpty("samples and users see the device contract, queues, feature model and Compat, never the wire or libc");
    }

    private static IEnumerable<(string File, string Part, HashSet<string> Refs)> Scan()
    {
        string root = FindRepoRoot();
        var roots = new[] { "src/VhostCompat", "src/VhostCompat.Hosting", "samples" };
        foreach (string top in roots)
        {
            foreach (string path in Directory.EnumerateFiles(Path.Combine(root, top), "*.cs", SearchOption.AllDirectories))
            {
                string rel = Path.GetRelativePath(root, path).Replace('\\', '/');
                if (rel.Contains("/bin/", StringComparison.Ordinal) || rel.Contains("/obj/", StringComparison.Ordinal))
                {
                    continue;
                }

                string text = File.ReadAllText(path);
                yield return (rel, PartOf(text, rel), References(text));
            }
        }
    }

    /// <summary>The part a file belongs to, by its folder (a library file's namespace must match its folder).</summary>
    private static string PartOf(string text, string file)
    {
        if (file.StartsWith("samples/", StringComparison.Ordinal))
        {
            return "Samples";
        }

        if (file.StartsWith("src/VhostCompat.Hosting/", StringComparison.Ordinal))
        {
            return "Hosting";
        }

        string[] segments = file.Split('/');
        string part = segments.Length == 3 ? "(root)" : segments[2];
        Match m = NamespaceDeclaration().Match(text);
        m.Groups[1].Value.Should().Be(part == "(root)" ? "VhostCompat" : "VhostCompat." + part, $"{file} is in the folder of that namespace");
        return part;
    }

    private static HashSet<string> References(string text)
    {
        var refs = new HashSet<string>(StringComparer.Ordinal);
        string body = NamespaceDeclaration().Replace(text, string.Empty);
        foreach (Match m in Qualified().Matches(body))
        {
            if (Parts.Contains(m.Groups[1].Value))
            {
                refs.Add(m.Groups[1].Value);
            }
        }

        foreach (Match m in ShortQualified().Matches(body))
        {
            if (KnownTypes.Contains($"VhostCompat.{m.Groups[1].Value}.{m.Groups[2].Value}"))
            {
                refs.Add(m.Groups[1].Value);
            }
        }

        return refs;
    }

    /// <summary>Every type of the library and the hosting package, internal ones included.</summary>
    private static readonly HashSet<string> KnownTypes =
        [.. new[] { typeof(VhostCompat.Backend.VhostUserBackend).Assembly, typeof(VhostCompat.Hosting.VhostUserBackendProgram).Assembly }
            .SelectMany(a => a.GetTypes()).Select(t => t.FullName!.Split('`')[0].Split('+')[0])];

    private static string? FindCycle(Dictionary<string, HashSet<string>> graph)
    {
        var state = new Dictionary<string, int>();
        var path = new Stack<string>();
        foreach (string start in graph.Keys)
        {
            if (Visit(start) is { } cycle)
            {
                return cycle;
            }
        }

        return null;

        string? Visit(string node)
        {
            if (state.GetValueOrDefault(node) == 2)
            {
                return null;
            }

            if (state.GetValueOrDefault(node) == 1)
            {
                return string.Join(" -> ", path.Reverse().SkipWhile(n => n != node).Append(node));
            }

            state[node] = 1;
            path.Push(node);
            foreach (string next in graph.GetValueOrDefault(node, []))
            {
                if (Visit(next) is { } cycle)
                {
                    return cycle;
                }
            }

            path.Pop();
            state[node] = 2;
            return null;
        }
    }

    private static string FindRepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "VhostCompat.sln")))
        {
            dir = dir.Parent;
        }

        return dir?.FullName ?? throw new InvalidOperationException("repository root not found");
    }

    [GeneratedRegex(@"^\s*namespace\s+([\w.]+)\s*;", RegexOptions.Multiline)]
    private static partial Regex NamespaceDeclaration();

    [GeneratedRegex(@"(?:global::)?\bVhostCompat\.(\w+)\b")]
    private static partial Regex Qualified();

    [GeneratedRegex(@"(?<![\w.])(Interop|Virtio|Protocol|Memory|Queues|Compat|Backend|Frontend|Proxy|Hosting)\.([A-Z]\w*)")]
    private static partial Regex ShortQualified();
}
