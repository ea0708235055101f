using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using VhostCompat.Compat;

namespace VhostCompat.Cli;

/// <summary>
/// <c>frontend</c>: reads the frontend side of a VM's interface over QMP — from a running VM's monitor socket
/// (version, the VM's machine type, the machine types that binary has) or from a hypervisor binary started for the
/// purpose with <c>-machine none -S -qmp stdio</c> (version and machine types) — and prints a frontend document, or
/// the given record / capability document with it embedded.
/// </summary>
internal static class FrontendCommands
{
    public static async Task<int> RunAsync(CliIo io, string? qmpSocket, string? qemuBinary, IReadOnlyList<string> qemuArgs, string? machine, string? recordPath, string? capsPath, TimeSpan timeout, CancellationToken cancellationToken)
    {
        if ((qmpSocket is null) == (qemuBinary is null))
        {
            throw new CliException("give exactly one of --qmp SOCKET (a running VM) or --qemu BINARY");
        }

        if (recordPath is not null && capsPath is not null)
        {
            throw new CliException("give at most one of --record and --caps");
        }

        if (qemuArgs.Count > 0 && qemuBinary is null)
        {
            throw new CliException("--qemu-arg needs --qemu");
        }

        // Read the inputs first: a bad file is reported before anything is started.
        var record = recordPath is null ? null : AckedStateRecord.Parse(CliSupport.ReadInput(recordPath), CliSupport.Label(recordPath));
        var caps = capsPath is null ? null : CliSupport.LoadCaps(capsPath);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        cts.CancelAfter(timeout);
        FrontendInfo info;
        try
        {
            info = qmpSocket is not null
                ? await FromSocketAsync(qmpSocket, cts.Token).ConfigureAwait(false)
                : await FromBinaryAsync(qemuBinary!, qemuArgs, cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new CliException($"{qmpSocket ?? qemuBinary}: no QMP answer within {timeout.TotalSeconds.ToString(CultureInfo.InvariantCulture)} s");
        }

        if (machine is not null)
        {
            try
            {
                info = info.WithMachine(machine);
            }
            catch (ArgumentException ex)
            {
                throw new CliException("--machine: " + ex.Message);
            }
        }

        io.Out.Write(record is not null ? record.WithFrontend(info).ToJson()
            : caps is not null ? CapabilityDocument.Render(caps.WithFrontend(info)) + "\n"
            : info.ToJson());
        return ExitCodes.Ok;
    }

    /// <summary>A running VM's monitor: its version, its machine type and the machine types of its binary.</summary>
    internal static async Task<FrontendInfo> FromSocketAsync(string path, CancellationToken ct)
    {
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), ct).ConfigureAwait(false);
        }
        catch (SocketException ex)
        {
            throw new CliException($"{path}: {ex.Message}");
        }

        await using var stream = new NetworkStream(socket, ownsSocket: false);
        var qmp = await Qmp.OpenAsync(stream, stream, path, ct).ConfigureAwait(false);
        var info = await qmp.ReadAsync(vm: true, ct).ConfigureAwait(false);
        return info;
    }

    /// <summary>A hypervisor binary, started with <c>-machine none</c> only to be asked, then told to quit.</summary>
    internal static async Task<FrontendInfo> FromBinaryAsync(string binary, IReadOnlyList<string> extraArgs, CancellationToken ct)
    {
        var psi = new ProcessStartInfo(binary)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in extraArgs.Concat(["-machine", "none", "-nodefaults", "-display", "none", "-S", "-qmp", "stdio"]))
        {
            psi.ArgumentList.Add(a);
        }

        Process process;
        try
        {
            process = Process.Start(psi) ?? throw new CliException($"{binary}: could not be started");
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            throw new CliException($"{binary}: {ex.Message}");
        }

        using (process)
        {
            var stderr = process.StandardError.ReadToEndAsync(ct);
            try
            {
                var qmp = await Qmp.OpenAsync(process.StandardOutput.BaseStream, process.StandardInput.BaseStream, binary, ct).ConfigureAwait(false);
                var info = await qmp.ReadAsync(vm: false, ct).ConfigureAwait(false);
                await qmp.QuitAsync(ct).ConfigureAwait(false);
                await process.WaitForExitAsync(ct).ConfigureAwait(false);
                return info;
            }
            catch (CliException ex)
            {
                if (!process.HasExited && !await ExitedAsync(process).ConfigureAwait(false))
                {
                    throw;
                }

                string why = (await stderr.ConfigureAwait(false)).Split('\n', StringSplitOptions.RemoveEmptyEntries).FirstOrDefault() ?? ex.Message;
                throw new CliException($"{binary} exited with {process.ExitCode}: {why.Trim()}");
            }
            finally
            {
                if (!process.HasExited)
                {
                    process.Kill(entireProcessTree: true);
                }
            }
        }
    }

    private static async Task<bool> ExitedAsync(Process p)
    {
        using var grace = new CancellationTokenSource(TimeSpan.FromSeconds(2));
        try
        {
            await p.WaitForExitAsync(grace.Token).ConfigureAwait(false);
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    /// <summary>A minimal QMP client: line-delimited JSON, events skipped, one command at a time.</summary>
    private sealed class Qmp(StreamReader reader, Stream output, string label)
    {
        private const int MaxLine = 1 << 20;

        public static async Task<Qmp> OpenAsync(Stream input, Stream output, string label, CancellationToken ct)
        {
            var qmp = new Qmp(new StreamReader(input, new UTF8Encoding(false), false, 4096, leaveOpen: true), output, label);
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

        public async Task<FrontendInfo> ReadAsync(bool vm, CancellationToken ct)
        {
            string version;
            using (var v = await ExecuteAsync("query-version", null, ct).ConfigureAwait(false))
            {
                var q = Return(v).GetProperty("qemu");
                version = string.Create(CultureInfo.InvariantCulture, $"{q.GetProperty("major").GetInt32()}.{q.GetProperty("minor").GetInt32()}.{q.GetProperty("micro").GetInt32()}");
            }

            var machines = new List<string>();
            using (var m = await ExecuteAsync("query-machines", null, ct).ConfigureAwait(false))
            {
                foreach (var e in Return(m).EnumerateArray())
                {
                    machines.Add(e.GetProperty("name").GetString()!);
                    if (e.TryGetProperty("alias", out var alias) && alias.GetString() is { } a)
                    {
                        machines.Add(a);
                    }
                }
            }

            string? machine = null;
            if (vm)
            {
                using var t = await ExecuteAsync("qom-get", """{"path":"/machine","property":"type"}""", ct).ConfigureAwait(false);
                string type = Return(t).GetString()!;
                machine = type.EndsWith("-machine", StringComparison.Ordinal) ? type[..^"-machine".Length] : type;
            }

            try
            {
                return new FrontendInfo("qemu", version, machine, machines);
            }
            catch (ArgumentException ex)
            {
                throw new CliException($"{label}: unexpected QMP answer: {ex.Message}");
            }
        }

        public async Task QuitAsync(CancellationToken ct)
        {
            await WriteAsync("""{"execute":"quit"}""", ct).ConfigureAwait(false);
        }

        private JsonElement Return(JsonDocument reply) =>
            reply.RootElement.TryGetProperty("return", out var r) ? r : throw new CliException($"{label}: QMP reply without 'return'");

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
                    string desc = error.TryGetProperty("desc", out var d) ? d.GetString() ?? "?" : error.GetRawText();
                    reply.Dispose();
                    throw new CliException($"{label}: QMP {command}: {desc}");
                }

                return reply;
            }
        }

        private async Task WriteAsync(string line, CancellationToken ct)
        {
            await output.WriteAsync(Encoding.UTF8.GetBytes(line + "\n"), ct).ConfigureAwait(false);
            await output.FlushAsync(ct).ConfigureAwait(false);
        }

        private async Task<JsonDocument> ReadMessageAsync(CancellationToken ct)
        {
            string? line = await reader.ReadLineAsync(ct).ConfigureAwait(false) ?? throw new CliException($"{label}: the monitor closed the connection");
            if (line.Length > MaxLine)
            {
                throw new CliException($"{label}: QMP message longer than {MaxLine} bytes");
            }

            try
            {
                var doc = JsonDocument.Parse(line);
                if (doc.RootElement.ValueKind != JsonValueKind.Object)
                {
                    doc.Dispose();
                    throw new CliException($"{label}: QMP message is not an object");
                }

                return doc;
            }
            catch (JsonException ex)
            {
                throw new CliException($"{label}: not QMP: {ex.Message}");
            }
        }
    }
}
