using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
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
    private const int MaxStderr = 8192;

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
        UnixDomainSocketEndPoint endpoint;
        try
        {
            endpoint = new UnixDomainSocketEndPoint(path);
        }
        catch (ArgumentException)
        {
            throw new CliException($"--qmp '{path}': not a Unix socket path (empty, or longer than sun_path holds)");
        }

        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(endpoint, ct).ConfigureAwait(false);
        }
        catch (SocketException ex)
        {
            // ENOENT comes back as "Cannot assign requested address".
            throw new CliException($"{path}: {(File.Exists(path) || Directory.Exists(path) ? ex.Message : "no such socket")}");
        }

        await using var stream = new NetworkStream(socket, ownsSocket: false);
        var qmp = await QmpClient.OpenAsync(stream, stream, path, ct).ConfigureAwait(false);
        return await qmp.ReadFrontendAsync(vm: true, ct).ConfigureAwait(false);
    }

    /// <summary>A hypervisor binary, started with <c>-machine none</c> only to be asked, then told to quit.</summary>
    internal static async Task<FrontendInfo> FromBinaryAsync(string binary, IReadOnlyList<string> extraArgs, CancellationToken ct)
    {
        if (binary.Length == 0)
        {
            throw new CliException("--qemu: empty binary name");
        }

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
            var stderr = HeadAsync(process.StandardError, ct);
            try
            {
                var qmp = await QmpClient.OpenAsync(process.StandardOutput.BaseStream, process.StandardInput.BaseStream, binary, ct).ConfigureAwait(false);
                var info = await qmp.ReadFrontendAsync(vm: false, ct).ConfigureAwait(false);
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

    /// <summary>The first <see cref="MaxStderr"/> characters of a stream, read to its end so that the writer never blocks.</summary>
    private static async Task<string> HeadAsync(StreamReader reader, CancellationToken ct)
    {
        var head = new StringBuilder();
        var chunk = new char[4096];
        int n;
        while ((n = await reader.ReadAsync(chunk, ct).ConfigureAwait(false)) > 0)
        {
            head.Append(chunk, 0, Math.Min(n, MaxStderr - head.Length));
        }

        return head.ToString();
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
}
