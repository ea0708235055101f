namespace VhostCompat.Benchmarks.Shield;

/// <summary>The comparison table of saved <c>shield</c> outputs (their <c>CASE</c> lines), as Markdown, with totals per configuration.</summary>
internal static class ShieldTable
{
    public static int Print(IReadOnlyList<string> specs)
    {
        var columns = new List<(string Label, Dictionary<string, string[]> Cases)>();
        foreach (string spec in specs)
        {
            int eq = spec.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0 || !File.Exists(spec[(eq + 1)..]))
            {
                Console.Error.WriteLine($"shield --table: '{spec}' is not LABEL=FILE of an existing file");
                return 2;
            }

            var cases = new Dictionary<string, string[]>(StringComparer.Ordinal);
            foreach (string line in File.ReadLines(spec[(eq + 1)..]).Where(l => l.StartsWith("CASE ", StringComparison.Ordinal)))
            {
                string[] f = line[5..].Split(" | ");
                cases[f[0].Trim()] = f;
            }

            columns.Add((spec[..eq], cases));
        }

        Console.WriteLine($"| case | HOSTILE-INPUTS | {string.Join(" | ", columns.Select(c => c.Label))} |");
        Console.WriteLine($"|---|---|{string.Concat(columns.Select(_ => "---|"))}");
        foreach (var sc in ShieldCases.All)
        {
            var cells = columns.Select(c => c.Cases.TryGetValue(sc.Name, out var f) ? Cell(f) : "not run");
            Console.WriteLine($"| {sc.Name} | {sc.Ids} | {string.Join(" | ", cells)} |");
        }

        foreach (var (what, word) in new[] { ("crashes", "CRASH"), ("proxy crashes", "PROXY-CRASH"), ("hangs", "HANG"), ("leaks", "LEAK"), ("corruptions", "CORRUPT") })
        {
            var counts = columns.Select(c => c.Cases.Values.Count(f => f.Length > 2 && f[2].Split('+').Contains(word)).ToString(System.Globalization.CultureInfo.InvariantCulture));
            Console.WriteLine($"| **{what}** | | {string.Join(" | ", counts)} |");
        }

        Console.WriteLine($"| **cases run** | | {string.Join(" | ", columns.Select(c => c.Cases.Count.ToString(System.Globalization.CultureInfo.InvariantCulture)))} |");
        return 0;
    }

    private static string Cell(string[] f)
    {
        string outcome = f.Length > 2 ? f[2].Trim() : "?";
        string response = f.Length > 3 ? f[3].Trim() : "";
        return outcome == "ok" ? $"ok ({response})" : $"**{outcome}** ({response})";
    }
}
