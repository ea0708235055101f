using System.Reflection;
using System.Text;

namespace VhostCompat.Tests;

/// <summary>
/// Renders the public API of the VhostCompat assembly and compares it with the checked-in
/// snapshot (PublicApi.txt), so every API change is a visible diff in review. To accept a change,
/// run the tests with VHOSTCOMPAT_UPDATE_API=1 and commit the new snapshot.
/// </summary>
public sealed class PublicApiTests
{
    [Fact]
    public void Public_api_matches_the_checked_in_snapshot()
    {
        string actual = Render(typeof(VhostCompat.Backend.VhostUserBackend).Assembly);
        string path = Path.Combine(FindRepoRoot(), "tests", "VhostCompat.Tests", "PublicApi.txt");
        if (Environment.GetEnvironmentVariable("VHOSTCOMPAT_UPDATE_API") == "1")
        {
            File.WriteAllText(path, actual);
        }

        File.Exists(path).Should().BeTrue("the snapshot is checked in");
        actual.Should().Be(File.ReadAllText(path), "the public API changed: review it, then update PublicApi.txt (VHOSTCOMPAT_UPDATE_API=1)");
    }

    [Fact]
    public void Every_protocol_internal_stays_internal()
    {
        var exported = typeof(VhostCompat.Backend.VhostUserBackend).Assembly.GetExportedTypes().Select(t => t.Namespace).Distinct();
        exported.Should().NotContain(["VhostCompat.Interop", "VhostCompat.Memory"], "libc interop and memory mapping are implementation details");
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

    internal static string Render(Assembly assembly)
    {
        var sb = new StringBuilder();
        // Compiler-generated names (the grouping types of C# 14 extension blocks, <G>$...) are not API anyone calls.
        foreach (Type t in assembly.GetExportedTypes().Where(t => !t.FullName!.Contains('<', StringComparison.Ordinal)).OrderBy(t => t.FullName, StringComparer.Ordinal))
        {
            sb.Append(Kind(t)).Append(' ').AppendLine(t.FullName);
            var members = t.GetMembers(BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly)
                .Where(m => m is not MethodInfo { IsSpecialName: true } && !m.Name.StartsWith('<'))
                .Select(Describe)
                .OrderBy(s => s, StringComparer.Ordinal);
            foreach (string m in members)
            {
                sb.Append("  ").AppendLine(m);
            }
        }

        return sb.ToString();
    }

    private static string Kind(Type t) =>
        t.IsEnum ? "enum" : t.IsInterface ? "interface" : t.IsValueType ? "struct" : t.IsAbstract && t.IsSealed ? "static class" : t.IsAbstract ? "abstract class" : t.IsSealed ? "sealed class" : "class";

    private static string Describe(MemberInfo m) => m switch
    {
        ConstructorInfo c => $"ctor({Parameters(c)})",
        MethodInfo mi => $"{(mi.IsStatic ? "static " : string.Empty)}{(mi.IsAbstract ? "abstract " : mi.IsVirtual && !mi.IsFinal ? "virtual " : string.Empty)}{Name(mi.ReturnType)} {mi.Name}({Parameters(mi)})",
        PropertyInfo p => $"{Name(p.PropertyType)} {p.Name} {{ {(p.GetMethod?.IsPublic == true ? "get; " : string.Empty)}{(p.SetMethod?.IsPublic == true ? "set; " : string.Empty)}}}",
        FieldInfo f => f.IsLiteral ? $"const {Name(f.FieldType)} {f.Name} = {f.GetRawConstantValue()}" : $"{(f.IsStatic ? "static " : string.Empty)}{Name(f.FieldType)} {f.Name}",
        EventInfo e => $"event {Name(e.EventHandlerType!)} {e.Name}",
        Type nested => $"nested {nested.Name}",
        _ => m.ToString() ?? m.Name,
    };

    private static string Parameters(MethodBase m) => string.Join(", ", m.GetParameters().Select(p => $"{Name(p.ParameterType)} {p.Name}"));

    private static string Name(Type t) => t.IsGenericType
        ? $"{t.Name[..t.Name.IndexOf('`', StringComparison.Ordinal)]}<{string.Join(", ", t.GetGenericArguments().Select(Name))}>"
        : t.Name;
}
