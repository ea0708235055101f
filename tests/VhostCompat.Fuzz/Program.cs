using System.Globalization;
using VhostCompat.Fuzz.Targets;

namespace VhostCompat.Fuzz;

/// <summary>
/// <c>afl &lt;target&gt;</c> | <c>replay &lt;target&gt; &lt;dir|file&gt;</c> |
/// <c>mutate &lt;target&gt; --iterations N [--seed S] [--corpus DIR] [--findings DIR]</c> | <c>seed &lt;target|all&gt; &lt;dir&gt;</c>.
/// Bad arguments: one line on stderr, exit code 2.
/// </summary>
internal static class Program
{
    private const string Usage = "usage: VhostCompat.Fuzz afl|replay|mutate|seed <target> ... (targets: message, split, packed, inflight, compat)";

    public static int Main(string[] args)
    {
        try
        {
            return args.Length < 2 ? Fail(Usage) : args[0] switch
            {
                "afl" => args.Length == 2 ? Afl(args[1]) : Fail("afl takes exactly one target"),
                "replay" => args.Length == 3 ? Replay(args[1], args[2]) : Fail("replay takes a target and a file or directory"),
                "mutate" => Mutate(args[1], args[2..]),
                "seed" => args.Length == 3 ? Seed(args[1], args[2]) : Fail("seed takes a target (or all) and a directory"),
                _ => Fail($"unknown mode '{args[0]}'; {Usage}"),
            };
        }
        catch (UsageException ex)
        {
            return Fail(ex.Message);
        }
    }

    private static int Afl(string name)
    {
        if (!FuzzTargets.Names.Contains(name))
        {
            throw new UsageException($"unknown target '{name}' (targets: {string.Join(", ", FuzzTargets.Names)})");
        }

        // Created on the first input: instrumented SDK code must not run before Fuzzer.Run has set up
        // the coverage map (it faults with an access violation otherwise).
        IFuzzTarget? target = null;
        SharpFuzz.Fuzzer.Run(stream =>
        {
            target ??= Target(name);
            using var ms = new MemoryStream();
            stream.CopyTo(ms);
            target.Execute(ms.ToArray());
        });
        target?.Dispose();
        return 0;
    }

    private static int Replay(string name, string path)
    {
        using var target = Target(name);
        string[] files = Directory.Exists(path) ? Directory.GetFiles(path).Order(StringComparer.Ordinal).ToArray()
            : File.Exists(path) ? [path] : throw new UsageException($"no such file or directory: {path}");
        int crashes = 0;
        foreach (string file in files)
        {
            try
            {
                target.Execute(File.ReadAllBytes(file));
            }
            catch (Exception ex)
            {
                crashes++;
                Console.WriteLine($"CRASH {file}: {ex}");
            }
        }

        Console.WriteLine($"{name}: replayed {files.Length} files, {crashes} crashes");
        return crashes == 0 ? 0 : 1;
    }

    private static int Mutate(string name, string[] options)
    {
        long iterations = -1;
        int seed = 1;
        string? corpus = null;
        string? findings = "findings";
        for (int i = 0; i < options.Length; i++)
        {
            string value = i + 1 < options.Length ? options[i + 1] : throw new UsageException($"{options[i]} needs a value");
            switch (options[i])
            {
                case "--iterations":
                    iterations = long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out long n) && n > 0 ? n : throw new UsageException($"--iterations must be a positive integer, not '{value}'");
                    break;
                case "--seed":
                    seed = int.TryParse(value, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int s) ? s : throw new UsageException($"--seed must be an integer, not '{value}'");
                    break;
                case "--corpus":
                    corpus = Directory.Exists(value) ? value : throw new UsageException($"no such corpus directory: {value}");
                    break;
                case "--findings":
                    findings = value;
                    break;
                default:
                    throw new UsageException($"unknown option '{options[i]}'");
            }

            i++;
        }

        if (iterations < 0)
        {
            throw new UsageException("mutate needs --iterations N");
        }

        using var target = Target(name);
        var extra = corpus is null ? [] : Directory.GetFiles(corpus).Order(StringComparer.Ordinal).Select(File.ReadAllBytes).ToList();
        var result = MutationLoop.Run(target, iterations, seed, extra, findings, Console.Out);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{name}: {result.Executions} executions in {result.Elapsed.TotalSeconds:F1} s ({result.PerSecond:F0} exec/s), seed {seed}, {result.Crashes} crashes, {100.0 * result.Reached / result.Executions:F1}% of inputs got past validation"));
        return result.Crashes == 0 ? 0 : 1;
    }

    private static int Seed(string name, string dir)
    {
        foreach (string n in name == "all" ? FuzzTargets.Names : [name])
        {
            using var target = Target(n);
            string d = Path.Combine(dir, n);
            Directory.CreateDirectory(d);
            foreach (var (file, data) in target.Seeds())
            {
                File.WriteAllBytes(Path.Combine(d, file), data);
            }
        }

        return 0;
    }

    private static IFuzzTarget Target(string name) =>
        FuzzTargets.Create(name) ?? throw new UsageException($"unknown target '{name}' (targets: {string.Join(", ", FuzzTargets.Names)})");

    private static int Fail(string message)
    {
        Console.Error.WriteLine(message);
        return 2;
    }

    private sealed class UsageException(string message) : Exception(message);
}
