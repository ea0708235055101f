using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;

namespace VhostCompat.InteropTests.Harness;

/// <summary>Reads and polls text files that another process is still writing (logs, serial consoles).</summary>
public static class LogFile
{
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(100);

    /// <summary>Whole file, or empty when it does not exist (yet). Shares the file with its writer.</summary>
    public static string ReadAll(string path)
    {
        try
        {
            using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            using var reader = new StreamReader(fs, Encoding.UTF8);
            return reader.ReadToEnd();
        }
        catch (FileNotFoundException)
        {
            return string.Empty;
        }
        catch (DirectoryNotFoundException)
        {
            return string.Empty;
        }
    }

    /// <summary>Lines of the file; a serial console may contain \r\n and NULs, both are removed.</summary>
    public static IReadOnlyList<string> ReadLines(string path) =>
        ReadAll(path).Replace("\0", string.Empty, StringComparison.Ordinal)
            .Split('\n')
            .Select(l => l.TrimEnd('\r'))
            .Where(l => l.Length > 0)
            .ToList();

    /// <summary>Last <paramref name="maxChars"/> characters of the file, marked when cut.</summary>
    public static string Tail(string path, int maxChars = 16_000)
    {
        var text = ReadAll(path).Replace("\0", string.Empty, StringComparison.Ordinal);
        return text.Length <= maxChars ? text : "[... " + (text.Length - maxChars) + " chars cut ...]\n" + text[^maxChars..];
    }

    /// <summary>
    /// Polls until a line of <paramref name="path"/> matches <paramref name="pattern"/>. Returns the match, or null when
    /// the deadline passes or when <paramref name="stopWhenExited"/> has exited and its final output has no match.
    /// </summary>
    public static async Task<Match?> WaitForLineAsync(string path, Regex pattern, TimeSpan timeout, ExternalProcess? stopWhenExited = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(pattern);
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var exited = stopWhenExited?.HasExited == true;
            foreach (var line in ReadLines(path))
            {
                var m = pattern.Match(line);
                if (m.Success)
                {
                    return m;
                }
            }

            if (exited || clock.Elapsed >= timeout)
            {
                return null;
            }

            await Task.Delay(PollInterval, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Polls until <paramref name="path"/> exists (e.g. a Unix socket a server binds).</summary>
    public static async Task<bool> WaitForPathAsync(string path, TimeSpan timeout, ExternalProcess? stopWhenExited = null)
    {
        var clock = Stopwatch.StartNew();
        while (!File.Exists(path))
        {
            if (stopWhenExited?.HasExited == true || clock.Elapsed >= timeout)
            {
                return File.Exists(path);
            }

            await Task.Delay(PollInterval).ConfigureAwait(false);
        }

        return true;
    }
}
