using System.Globalization;
using System.Text;

namespace VhostCompat.InteropTests.Harness;

/// <summary>
/// One test's scratch directory (short path: Unix socket paths are limited to 107 bytes) plus the list of
/// files whose content belongs in a failure message. Kept after the run for inspection.
/// </summary>
public sealed class InteropRun
{
    private readonly List<(string Title, string Path)> _artifacts = [];

    private InteropRun(string testName, string directory)
    {
        TestName = testName;
        Directory = directory;
    }

    public string TestName { get; }

    public string Directory { get; }

    public static InteropRun Create(string testName)
    {
        var root = Path.Combine(Initramfs.CacheDirectory, "runs");
        PruneOldRuns(root, TimeSpan.FromDays(2));
        var name = DateTime.UtcNow.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture) + "-" + Guid.NewGuid().ToString("N")[..6];
        var dir = Path.Combine(root, name);
        System.IO.Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "test-name"), testName + "\n");
        return new InteropRun(testName, dir);
    }

    private static void PruneOldRuns(string root, TimeSpan maxAge)
    {
        if (!System.IO.Directory.Exists(root))
        {
            return;
        }

        foreach (var dir in new DirectoryInfo(root).GetDirectories())
        {
            if (DateTime.UtcNow - dir.LastWriteTimeUtc > maxAge)
            {
                try
                {
                    dir.Delete(recursive: true);
                }
                catch (IOException)
                {
                }
                catch (UnauthorizedAccessException)
                {
                }
            }
        }
    }

    public string PathFor(string fileName) => Path.Combine(Directory, fileName);

    /// <summary>Registers a file to be shown (its tail) by <see cref="Diagnostics"/>.</summary>
    public void AddArtifact(string title, string path) => _artifacts.Add((title, path));

    /// <summary>Every registered artifact, for failure messages.</summary>
    public string Diagnostics()
    {
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"\n===== interop run {TestName}: {Directory} =====\n");
        foreach (var (title, path) in _artifacts)
        {
            var text = LogFile.Tail(path);
            sb.Append(CultureInfo.InvariantCulture, $"----- {title} ({path}) -----\n");
            sb.Append(text.Length == 0 ? "(empty)\n" : text.EndsWith('\n') ? text : text + "\n");
        }

        sb.Append("===== end =====\n");
        return sb.ToString();
    }
}
