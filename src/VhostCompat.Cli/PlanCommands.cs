using System.CommandLine;
using System.Net;
using System.Text;
using VhostCompat.Compat;

namespace VhostCompat.Cli;

/// <summary>One cell of the plan: can this VM (record) go to this host (capability document)?</summary>
internal sealed record PlanCell(string Host, bool Compatible, IReadOnlyList<PreflightFinding> Errors);

/// <summary>One VM device (record) and its verdict for every host.</summary>
internal sealed record PlanRow(string Record, string Key, string? Profile, IReadOnlyList<PlanCell> Cells);

/// <summary><c>plan --records DIR --caps DIR</c>: for every VM record, the hosts it can migrate to.</summary>
internal static class PlanCommands
{
    public static Command Build(CliIo io, Option<bool> json)
    {
        var records = new Option<string>("--records") { Description = "Directory of acked-state records (*.json), one per VM device", Required = true };
        var caps = new Option<string>("--caps") { Description = "Directory of capability documents (*.json), one per host; the file name (without .json) names the host", Required = true };
        var format = new Option<string>("--format") { Description = "text (default), json or html (a self-contained page)", DefaultValueFactory = _ => "text" };
        format.AcceptOnlyFromAmong("text", "json", "html");
        var plan = new Command("plan", "For every VM record, the hosts it can migrate to (the preflight of 'check' for every pair). Exit 0 when every VM has a destination, 1 when one has none.\n\nExamples:\n  vhost-compat plan --records /srv/records --caps /srv/caps\n  vhost-compat plan --records /srv/records --caps /srv/caps --format html > plan.html")
        {
            records, caps, format,
        };
        plan.SetAction(r => Run(io, r.GetValue(records)!, r.GetValue(caps)!, r.GetValue(json) ? "json" : r.GetValue(format)!));
        return plan;
    }

    public static int Run(CliIo io, string recordsDir, string capsDir, string format)
    {
        var hosts = Files(capsDir, "--caps").Select(f => (Name: Path.GetFileNameWithoutExtension(f), Caps: CliSupport.LoadCaps(f))).ToList();
        var vms = Files(recordsDir, "--records").Select(f => (File: Path.GetFileName(f), Record: AckedStateRecord.Parse(CliSupport.ReadInput(f), f))).ToList();
        var rows = Compute(vms, hosts);
        io.Out.Write(format switch
        {
            "json" => Json(rows) + "\n",
            "html" => Html(rows, hosts.Select(h => h.Name).ToList()),
            _ => Text(rows, hosts.Select(h => h.Name).ToList()),
        });
        return rows.All(r => r.Cells.Any(c => c.Compatible)) ? ExitCodes.Ok : ExitCodes.No;
    }

    public static List<PlanRow> Compute(IReadOnlyList<(string File, AckedStateRecord Record)> vms, IReadOnlyList<(string Name, BackendCapabilities Caps)> hosts) =>
        vms.Select(v => new PlanRow(
            v.File,
            v.Record.Key,
            v.Record.Profile?.Id ?? v.Record.Profile?.Canonical,
            hosts.Select(h =>
            {
                var result = PreflightCheck.Check(v.Record.Profile, v.Record, h.Caps);
                return new PlanCell(h.Name, result.Compatible, result.Findings.Where(f => f.Severity == PreflightSeverity.Error).ToList());
            }).ToList())).ToList();

    private static string[] Files(string dir, string option)
    {
        if (!Directory.Exists(dir))
        {
            throw new CliException($"{option} {dir}: no such directory");
        }

        var files = Directory.GetFiles(dir, "*.json").Order(StringComparer.Ordinal).ToArray();
        return files.Length > 0 ? files : throw new CliException($"{option} {dir}: no *.json files");
    }

    private static string Cell(PlanCell c) => c.Compatible ? "yes" : "no: " + string.Join(",", c.Errors.Select(e => e.Code).Distinct());

    public static string Text(IReadOnlyList<PlanRow> rows, IReadOnlyList<string> hosts)
    {
        var header = new List<string> { "record", "profile" };
        header.AddRange(hosts);
        var table = new List<List<string>> { header };
        table.AddRange(rows.Select(r => new List<string> { r.Key, r.Profile ?? "-" }.Concat(r.Cells.Select(Cell)).ToList()));
        var widths = Enumerable.Range(0, header.Count).Select(i => table.Max(row => row[i].Length)).ToArray();
        var sb = new StringBuilder();
        foreach (var row in table)
        {
            sb.Append(string.Join("  ", row.Select((v, i) => i == row.Count - 1 ? v : v.PadRight(widths[i])))).Append('\n');
        }

        foreach (var r in rows.Where(r => !r.Cells.Any(c => c.Compatible)))
        {
            sb.Append($"{r.Key}: no destination\n");
        }

        return sb.ToString();
    }

    public static string Json(IReadOnlyList<PlanRow> rows) => CliSupport.Json(w =>
    {
        w.WriteStartObject();
        w.WriteStartArray("records");
        foreach (var r in rows)
        {
            w.WriteStartObject();
            w.WriteString("file", r.Record);
            w.WriteString("key", r.Key);
            if (r.Profile is null)
            {
                w.WriteNull("profile");
            }
            else
            {
                w.WriteString("profile", r.Profile);
            }

            CliSupport.WriteStrings(w, "destinations", r.Cells.Where(c => c.Compatible).Select(c => c.Host));
            w.WriteStartArray("hosts");
            foreach (var c in r.Cells)
            {
                w.WriteStartObject();
                w.WriteString("host", c.Host);
                w.WriteBoolean("compatible", c.Compatible);
                w.WriteStartArray("errors");
                foreach (var e in c.Errors)
                {
                    w.WriteStartObject();
                    w.WriteString("code", e.Code);
                    w.WriteString("message", e.Message);
                    w.WriteEndObject();
                }

                w.WriteEndArray();
                w.WriteEndObject();
            }

            w.WriteEndArray();
            w.WriteEndObject();
        }

        w.WriteEndArray();
        w.WriteEndObject();
    });

    /// <summary>A self-contained page (inline style, no script, no external resource); every value is HTML-encoded.</summary>
    public static string Html(IReadOnlyList<PlanRow> rows, IReadOnlyList<string> hosts)
    {
        static string E(string s) => WebUtility.HtmlEncode(s);
        var sb = new StringBuilder();
        sb.Append("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>VhostCompat migration plan</title>\n")
          .Append("<style>body{font-family:sans-serif}table{border-collapse:collapse}th,td{border:1px solid #999;padding:4px 8px;vertical-align:top}")
          .Append("td.yes{background:#c8f0c8}td.no{background:#f6caca}td.no span{display:block;font-size:80%;max-width:28em}</style></head><body>\n")
          .Append("<h1>Migration plan</h1>\n<p>Rows: VM devices (acked-state records). Columns: hosts (capability documents). A cell is the preflight of <code>vhost-compat check</code>.</p>\n")
          .Append("<table>\n<tr><th>record</th><th>profile</th>");
        foreach (var h in hosts)
        {
            sb.Append("<th>").Append(E(h)).Append("</th>");
        }

        sb.Append("</tr>\n");
        foreach (var r in rows)
        {
            sb.Append("<tr><th>").Append(E(r.Key)).Append("</th><td>").Append(E(r.Profile ?? "-")).Append("</td>");
            foreach (var c in r.Cells)
            {
                if (c.Compatible)
                {
                    sb.Append("<td class=\"yes\">yes</td>");
                }
                else
                {
                    sb.Append("<td class=\"no\">no");
                    foreach (var e in c.Errors)
                    {
                        sb.Append("<span title=\"").Append(E(e.Message)).Append("\">").Append(E(e.Code)).Append(": ").Append(E(e.Message)).Append("</span>");
                    }

                    sb.Append("</td>");
                }
            }

            sb.Append("</tr>\n");
        }

        return sb.Append("</table>\n</body></html>\n").ToString();
    }
}
