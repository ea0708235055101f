namespace VhostCompat.IntegrationTests.Support;

/// <summary>Counts this process's open fds and memory mappings (the I3 "no leaks" oracle).</summary>
internal static class ProcessResources
{
    /// <summary>Open fds, not counting assemblies and native libraries the runtime opens lazily as code first runs.</summary>
    public static int OpenFds() => FdTargets().Count(kv => !IsRuntimeFile(kv.Value));

    private static bool IsRuntimeFile(string target) =>
        target.EndsWith(".dll", StringComparison.Ordinal) || target.EndsWith(".so", StringComparison.Ordinal) || target.Contains(".so.", StringComparison.Ordinal);

    /// <summary>What each open fd points to ("socket:[123]", "anon_inode:[eventfd]", a path...).</summary>
    public static Dictionary<string, string> FdTargets()
    {
        var result = new Dictionary<string, string>();
        foreach (var f in System.IO.Directory.GetFiles("/proc/self/fd"))
        {
            try
            {
                result[Path.GetFileName(f)] = new FileInfo(f).LinkTarget ?? "?";
            }
            catch (IOException)
            {
            }
        }

        return result;
    }

    public static int Mappings() => File.ReadAllLines("/proc/self/maps").Length;

    /// <summary>Mappings of guest memory created by <c>GuestMemory</c> (memfd name "vhostcompat-guest"), on either side.</summary>
    public static int GuestMemoryMappings() => File.ReadAllLines("/proc/self/maps").Count(l => l.Contains("memfd:vhostcompat-guest", StringComparison.Ordinal));

    /// <summary>Waits until the fd count returns to (at most) the baseline, since the backend closes asynchronously.</summary>
    public static async Task<int> SettleFdsAsync(int baseline, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(3));
        int now = OpenFds();
        while (now > baseline && DateTime.UtcNow < deadline)
        {
            await Task.Delay(20);
            now = OpenFds();
        }

        return now;
    }
}
