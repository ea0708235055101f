using System.Buffers;
using System.Globalization;
using System.Text;
using System.Text.Json;
using VhostCompat.Compat;

namespace VhostCompat.Cli;

/// <summary>
/// A minimal QMP client: line-delimited JSON, events skipped, one command at a time. The monitor is not trusted: a
/// line is read into at most <see cref="MaxLine"/> bytes, every answer of the wrong shape, transport error and hang-up
/// is a <see cref="CliException"/> naming <c>label</c>, and text from the monitor is shortened before it is quoted.
/// </summary>
internal sealed class QmpClient
{
    /// <summary>Longest QMP message read (a real query-machines reply is tens of KiB).</summary>
    internal const int MaxLine = 1 << 20;

    private const int MaxQuoted = 200;

    private readonly Stream _input;
    private readonly Stream _output;
    private readonly string _label;
    private readonly byte[] _buffer = new byte[16384];
    private readonly ArrayBufferWriter<byte> _line = new();
    private int _start;
    private int _end;

    private QmpClient(Stream input, Stream output, string label)
    {
        _input = input;
        _output = output;
        _label = label;
    }

    /// <summary>Reads the greeting and leaves capabilities negotiation mode.</summary>
    public static async Task<QmpClient> OpenAsync(Stream input, Stream output, string label, CancellationToken ct)
    {
        var qmp = new QmpClient(input, output, label);
        using (var greeting = await qmp.ReadMessageAsync(ct).ConfigureAwait(false))
        {
            if (!greeting.RootElement.TryGetProperty("QMP", out _))
            {
                throw new CliException($"{label}: not a QMP monitor (no greeting)");
            }
        }

        (await qmp.ExecuteAsync("qmp_capabilities", null, ct).ConfigureAwait(false)).Dispose();
        return qmp;
    }

    /// <summary>query-version and query-machines, and for a running VM (<paramref name="vm"/>) its machine type from <c>qom-get /machine type</c>.</summary>
    public async Task<FrontendInfo> ReadFrontendAsync(bool vm, CancellationToken ct)
    {
        string version = await QueryAsync("query-version", null, r =>
        {
            var q = r.GetProperty("qemu");
            return string.Create(CultureInfo.InvariantCulture, $"{q.GetProperty("major").GetInt32()}.{q.GetProperty("minor").GetInt32()}.{q.GetProperty("micro").GetInt32()}");
        }, ct).ConfigureAwait(false);

        var machines = await QueryAsync("query-machines", null, r =>
        {
            var names = new List<string>();
            foreach (var e in r.EnumerateArray())
            {
                names.Add(e.GetProperty("name").GetString()!);
                if (e.TryGetProperty("alias", out var alias) && alias.GetString() is { } a)
                {
                    names.Add(a);
                }
            }

            return names;
        }, ct).ConfigureAwait(false);

        string? machine = null;
        if (vm)
        {
            string type = await QueryAsync("qom-get", """{"path":"/machine","property":"type"}""", r => r.GetString()!, ct).ConfigureAwait(false);
            machine = type.EndsWith("-machine", StringComparison.Ordinal) ? type[..^"-machine".Length] : type;
        }

        try
        {
            return new FrontendInfo("qemu", version, machine, machines);
        }
        catch (ArgumentException ex)
        {
            throw new CliException($"{_label}: unexpected QMP answer: {Quote(ex.Message)}");
        }
    }

    /// <summary>Asks the hypervisor to exit (its reply is not awaited).</summary>
    public Task QuitAsync(CancellationToken ct) => WriteAsync("""{"execute":"quit"}""", ct);

    private async Task<T> QueryAsync<T>(string command, string? arguments, Func<JsonElement, T> read, CancellationToken ct)
    {
        using var reply = await ExecuteAsync(command, arguments, ct).ConfigureAwait(false);
        if (!reply.RootElement.TryGetProperty("return", out var r))
        {
            throw new CliException($"{_label}: QMP reply to {command} without 'return'");
        }

        try
        {
            return read(r);
        }
        catch (Exception ex) when (ex is KeyNotFoundException or InvalidOperationException or FormatException)
        {
            // GetProperty on a missing member, Get* on the wrong kind or on undecodable text, a number out of range.
            throw new CliException($"{_label}: unexpected QMP answer to {command}: {Quote(ex.Message)}");
        }
    }

    private async Task<JsonDocument> ExecuteAsync(string command, string? arguments, CancellationToken ct)
    {
        await WriteAsync(arguments is null ? $$"""{"execute":"{{command}}"}""" : $$"""{"execute":"{{command}}","arguments":{{arguments}}}""", ct).ConfigureAwait(false);
        while (true)
        {
            var reply = await ReadMessageAsync(ct).ConfigureAwait(false);
            var root = reply.RootElement;
            if (root.TryGetProperty("event", out _))
            {
                reply.Dispose();
                continue;
            }

            if (root.TryGetProperty("error", out var error))
            {
                string desc = error.ValueKind == JsonValueKind.Object && error.TryGetProperty("desc", out var d) && d.ValueKind == JsonValueKind.String
                    ? d.GetString() ?? "?"
                    : error.GetRawText();
                reply.Dispose();
                throw new CliException($"{_label}: QMP {command}: {Quote(desc)}");
            }

            return reply;
        }
    }

    private async Task WriteAsync(string line, CancellationToken ct)
    {
        try
        {
            await _output.WriteAsync(Encoding.UTF8.GetBytes(line + "\n"), ct).ConfigureAwait(false);
            await _output.FlushAsync(ct).ConfigureAwait(false);
        }
        catch (IOException ex)
        {
            throw new CliException($"{_label}: the monitor closed the connection ({ex.Message})");
        }
    }

    private async Task<JsonDocument> ReadMessageAsync(CancellationToken ct)
    {
        byte[] line = await ReadLineAsync(ct).ConfigureAwait(false);
        try
        {
            var doc = JsonDocument.Parse(line);
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                doc.Dispose();
                throw new CliException($"{_label}: QMP message is not an object");
            }

            return doc;
        }
        catch (JsonException ex)
        {
            throw new CliException($"{_label}: not QMP: {Quote(ex.Message)}");
        }
    }

    /// <summary>The next line without its newline; fails rather than buffer more than <see cref="MaxLine"/> bytes.</summary>
    private async Task<byte[]> ReadLineAsync(CancellationToken ct)
    {
        _line.ResetWrittenCount();
        while (true)
        {
            ct.ThrowIfCancellationRequested();
            if (_start == _end)
            {
                int n;
                try
                {
                    n = await _input.ReadAsync(_buffer, ct).ConfigureAwait(false);
                }
                catch (IOException ex)
                {
                    throw new CliException($"{_label}: the monitor closed the connection ({ex.Message})");
                }

                if (n == 0)
                {
                    throw new CliException($"{_label}: the monitor closed the connection");
                }

                (_start, _end) = (0, n);
            }

            int newline = Array.IndexOf(_buffer, (byte)'\n', _start, _end - _start);
            int take = (newline < 0 ? _end : newline) - _start;
            if (_line.WrittenCount + take > MaxLine)
            {
                throw new CliException($"{_label}: QMP message longer than {MaxLine} bytes");
            }

            _line.Write(_buffer.AsSpan(_start, take));
            _start += take;
            if (newline >= 0)
            {
                _start++;
                return _line.WrittenSpan.ToArray();
            }
        }
    }

    /// <summary>Monitor text for a message: at most <see cref="MaxQuoted"/> characters.</summary>
    private static string Quote(string text) => text.Length <= MaxQuoted ? text : string.Concat(text.AsSpan(0, MaxQuoted), "...");
}
