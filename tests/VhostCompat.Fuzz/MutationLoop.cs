using System.Diagnostics;
using System.Security.Cryptography;
using VhostCompat.Fuzz.Targets;

namespace VhostCompat.Fuzz;

/// <summary>Outcome of a mutation run.</summary>
internal sealed record MutationResult(long Executions, int Crashes, long Reached, TimeSpan Elapsed, IReadOnlyList<string> Findings)
{
    public double PerSecond => Executions / Math.Max(Elapsed.TotalSeconds, 1e-9);
}

/// <summary>
/// The in-process mutation loop: starts from the seeds (plus an optional corpus directory), mutates
/// a random entry per execution and treats any exception escaping the target as a crash, saved under
/// <c>findingsDir</c>. No coverage feedback: the value is in the structure of the seeds and the
/// boundary values. A hard fault (SIGSEGV on a guard page) ends the process; replay the corpus
/// or run under AFL to find that input.
/// </summary>
internal static class MutationLoop
{
    public static MutationResult Run(IFuzzTarget target, long iterations, int seed, IEnumerable<byte[]> extraCorpus, string? findingsDir, TextWriter log)
    {
        var corpus = target.Seeds().Select(s => s.Data).Concat(extraCorpus).ToList();
        var mutator = new Mutator(seed);
        var random = new Random(seed ^ 0x5eed);
        var findings = new List<string>();
        int crashes = 0;
        long reached = 0;
        var clock = Stopwatch.StartNew();
        for (long i = 0; i < iterations; i++)
        {
            byte[] input = mutator.Mutate(corpus[random.Next(corpus.Count)], corpus);
            try
            {
                target.Execute(input);
                reached += target.Reached > 0 ? 1 : 0;
            }
            catch (Exception ex)
            {
                crashes++;
                string where = Save(findingsDir, target.Name, input);
                findings.Add(where);
                log.WriteLine($"crash at iteration {i} (seed {seed}), input {where}: {ex}");
            }
        }

        return new MutationResult(iterations, crashes, reached, clock.Elapsed, findings);
    }

    private static string Save(string? dir, string target, byte[] input)
    {
        string name = $"crash-{Convert.ToHexStringLower(SHA256.HashData(input))[..16]}";
        if (dir is null)
        {
            return $"{name} (not saved) {Convert.ToHexString(input.AsSpan(0, Math.Min(input.Length, 64)))}";
        }

        string path = Path.Combine(dir, target, name);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllBytes(path, input);
        return path;
    }
}
