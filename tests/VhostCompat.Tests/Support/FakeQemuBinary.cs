using System.Text.Json.Nodes;

namespace VhostCompat.Tests.Support;

/// <summary>
/// Shell scripts standing in for a hypervisor binary for <c>vhost-compat frontend --qemu</c>: one that speaks QMP on
/// stdio from a capture of a real QEMU (and writes its arguments, one per line, to <c>args</c> beside it), and one
/// that fails the way QEMU does on a bad option.
/// </summary>
internal static class FakeQemuBinary
{
    public static string Speaking(string dir, JsonObject capture)
    {
        File.WriteAllText(Path.Combine(dir, "greeting"), capture["greeting"]!.ToJsonString() + "\n");
        foreach (string command in new[] { "query-version", "query-machines" })
        {
            File.WriteAllText(Path.Combine(dir, command), capture["replies"]![command]!.ToJsonString() + "\n");
        }

        return Script(dir, "qemu-fake", $$$"""
            for a in "$@"; do printf '%s\n' "$a"; done > '{{{dir}}}/args'
            cat '{{{dir}}}/greeting'
            while IFS= read -r line; do
              case "$line" in
                *qmp_capabilities*) echo '{"return": {}}' ;;
                *query-version*) cat '{{{dir}}}/query-version' ;;
                *query-machines*) cat '{{{dir}}}/query-machines' ;;
                *quit*) echo '{"return": {}}'; exit 0 ;;
                *) echo '{"error": {"class": "CommandNotFound", "desc": "not in the fake"}}' ;;
              esac
            done
            """);
    }

    public static string Failing(string dir, string stderrLine, int exitCode) =>
        Script(dir, "qemu-failing", $"echo '{stderrLine}' >&2\nexit {exitCode}");

    /// <summary>The arguments the speaking fake was started with.</summary>
    public static IReadOnlyList<string> Arguments(string dir) => File.ReadAllLines(Path.Combine(dir, "args"));

    private static string Script(string dir, string name, string body)
    {
        string path = Path.Combine(dir, name);
        File.WriteAllText(path, "#!/bin/sh\n" + body + "\n");
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
        return path;
    }
}
