using System.Globalization;

namespace VhostCompat.Benchmarks.Soak;

/// <summary>One reading of another process's resources, taken from <c>/proc/&lt;pid&gt;</c>.</summary>
internal readonly record struct ProcSample(
    int Cycle, double Seconds, int Fds, int RuntimeFds, int Maps, int GuestMaps, int JitMaps, int FileMaps, int AnonMaps, long RssKiB, long RssAnonKiB, long RssShmemKiB, int Threads)
{
    /// <summary>Mappings that are not guest memory (the ones the JIT, GC and loader add).</summary>
    public int OtherMaps => Maps - GuestMaps;

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"cycle={Cycle,6} t={Seconds,7:0.0}s fds={Fds} (+{RuntimeFds} .dll/.so) maps={Maps} guest={GuestMaps} jit={JitMaps} file={FileMaps} anon={AnonMaps} rss={RssKiB} KiB (anon {RssAnonKiB}, shmem {RssShmemKiB}) threads={Threads}");
}

/// <summary>Reads fd, mapping and memory figures of a process from outside, through <c>/proc/&lt;pid&gt;</c>.</summary>
internal static class ProcStats
{
    /// <summary>Every memfd the soak's frontends create, and the backend's own inflight memfd, starts with this (maps show "memfd:NAME").</summary>
    public const string SessionMemfdPrefix = "memfd:vhostcompat-";

    /// <summary>True while the process exists and is not a zombie.</summary>
    public static bool IsAlive(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            int close = stat.LastIndexOf(')');
            return close > 0 && close + 2 < stat.Length && stat[close + 2] is not ('Z' or 'X');
        }
        catch (IOException)
        {
            return false;
        }
    }

    /// <summary>Lines of /proc/pid/maps that map session memory (guest RAM, inflight areas).</summary>
    public static int GuestMaps(int pid) => File.ReadLines($"/proc/{pid}/maps").Count(l => l.Contains(SessionMemfdPrefix, StringComparison.Ordinal));

    /// <summary>Open fds, split into the ones that point at assemblies and native libraries (opened lazily by the runtime) and the rest.</summary>
    public static (int Other, int Runtime) Fds(int pid)
    {
        int other = 0, runtime = 0;
        foreach (string f in Directory.EnumerateFiles($"/proc/{pid}/fd"))
        {
            string target;
            try
            {
                target = new FileInfo(f).LinkTarget ?? "";
            }
            catch (IOException)
            {
                continue; // closed between the listing and the readlink
            }

            if (target.EndsWith(".dll", StringComparison.Ordinal) || target.EndsWith(".so", StringComparison.Ordinal) || target.Contains(".so.", StringComparison.Ordinal))
            {
                runtime++;
            }
            else
            {
                other++;
            }
        }

        return (other, runtime);
    }

    public static ProcSample Read(int pid, int cycle, double seconds)
    {
        int maps = 0, guest = 0, jit = 0, file = 0, anon = 0;
        foreach (string line in File.ReadLines($"/proc/{pid}/maps"))
        {
            maps++;
            string path = PathOf(line);
            // memfd mappings read "/memfd:NAME (deleted)".
            if (path.Contains(SessionMemfdPrefix, StringComparison.Ordinal))
            {
                guest++;
            }
            else if (path.StartsWith("/memfd:", StringComparison.Ordinal))
            {
                jit++; // the runtime's W^X double mapping of code ("memfd:doublemapper"), its diagnostics IPC memfd
            }
            else if (path.Length == 0 || path[0] == '[')
            {
                anon++; // GC heap, stacks, [heap], [vdso]...
            }
            else
            {
                file++; // dotnet, the .so and .dll files
            }
        }

        var (fds, runtimeFds) = Fds(pid);
        long rss = 0, rssAnon = 0, rssShmem = 0;
        int threads = 0;
        foreach (string line in File.ReadLines($"/proc/{pid}/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                rss = Kib(line);
            }
            else if (line.StartsWith("RssAnon:", StringComparison.Ordinal))
            {
                rssAnon = Kib(line);
            }
            else if (line.StartsWith("RssShmem:", StringComparison.Ordinal))
            {
                rssShmem = Kib(line);
            }
            else if (line.StartsWith("Threads:", StringComparison.Ordinal))
            {
                threads = (int)Kib(line);
            }
        }

        return new ProcSample(cycle, seconds, fds, runtimeFds, maps, guest, jit, file, anon, rss, rssAnon, rssShmem, threads);
    }

    // "start-end perms offset dev inode   path": the path is whatever follows the fifth field.
    private static string PathOf(string line)
    {
        int i = 0;
        for (int field = 0; field < 5; field++)
        {
            while (i < line.Length && line[i] != ' ')
            {
                i++;
            }

            while (i < line.Length && line[i] == ' ')
            {
                i++;
            }
        }

        return line[i..];
    }

    private static long Kib(string line) =>
        long.Parse(line.AsSpan(line.IndexOf(':') + 1).Trim().ToString().Split(' ')[0], CultureInfo.InvariantCulture);
}
