using System.Globalization;

namespace VhostCompat.Benchmarks.Soak;

/// <summary>The soak's command line; <see cref="Parse"/> prints one line on stderr and returns null when it is wrong.</summary>
internal sealed record Options(string SocketPath, int Pid, SoakDevice Device, int Cycles, int Warmup, int SampleEvery, int Seed, int MaxSeconds, int MapsTolerance)
{
    private const string Usage = "usage: soak --socket-path PATH --pid N --device net|block|rng [--cycles N] [--warmup N] [--sample-every N] [--seed N] [--max-seconds N] [--maps-tolerance N]";

    public static Options? Parse(string[] args)
    {
        string? path = null;
        SoakDevice? device = null;
        int pid = 0, cycles = 10_000, warmup = 2000, every = 1000, seed = 15, maxSeconds = 1800, mapsTolerance = 32;
        for (int i = 1; i < args.Length; i++)
        {
            string key = args[i];
            if (i + 1 >= args.Length)
            {
                return Fail($"{key} needs a value; {Usage}");
            }

            string v = args[++i];
            bool ok = key switch
            {
                "--socket-path" => (path = v).Length > 0,
                "--device" => Enum.TryParse(v, ignoreCase: true, out SoakDevice d) && Enum.IsDefined(d) && !int.TryParse(v, out _) && (device = d) is not null,
                "--pid" => int.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out pid) && pid > 0,
                "--cycles" => int.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out cycles) && cycles > 0,
                "--warmup" => int.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out warmup),
                "--sample-every" => int.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out every) && every > 0,
                "--seed" => int.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out seed),
                "--max-seconds" => int.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out maxSeconds) && maxSeconds > 0,
                "--maps-tolerance" => int.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out mapsTolerance),
                _ => false,
            };
            if (!ok)
            {
                return Fail($"bad option {key} {v}; {Usage}");
            }
        }

        if (path is null || pid == 0 || device is null)
        {
            return Fail($"--socket-path, --pid and --device are required; {Usage}");
        }

        if (warmup >= cycles)
        {
            return Fail($"--warmup must be less than --cycles; {Usage}");
        }

        if (!File.Exists(path) || !ProcStats.IsAlive(pid))
        {
            return Fail($"no socket at {path} or no process {pid}");
        }

        return new Options(path, pid, device.Value, cycles, warmup, every, seed, maxSeconds, mapsTolerance);
    }

    private static Options? Fail(string line)
    {
        Console.Error.WriteLine(line);
        return null;
    }
}
