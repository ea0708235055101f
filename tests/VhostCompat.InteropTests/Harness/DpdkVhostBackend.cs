using System.Globalization;

namespace VhostCompat.InteropTests.Harness;

/// <summary>
/// DPDK's vhost PMD (dpdk-testpmd, package dpdk-dev) as a reference vhost-user backend, in icmpecho mode (answers
/// ARP and ICMP echo). Used to show that QEMU + kernel + initramfs work on this machine independently of our code.
/// Runs without hugepages (--no-huge: EAL memory is memfd and shareable).
/// </summary>
public sealed class DpdkVhostBackend : IAsyncDisposable
{
    private readonly string _prefix;

    private DpdkVhostBackend(ExternalProcess process, string prefix)
    {
        Process = process;
        _prefix = prefix;
    }

    public ExternalProcess Process { get; }

    public static string? TestpmdPath =>
        Environment.GetEnvironmentVariable("VHOSTCOMPAT_TESTPMD") is { Length: > 0 } p ? p : InteropPrerequisites.FindInPath("dpdk-testpmd");

    /// <summary>Starts testpmd listening on <paramref name="socketPath"/> and waits for the socket.</summary>
    public static async Task<DpdkVhostBackend> StartAsync(InteropRun run, string testpmd, string socketPath, string forwardMode = "icmpecho", TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(run);
        File.Delete(socketPath);
        var prefix = "vhostcompat" + Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + Path.GetFileName(run.Directory)[^6..];
        var args = new List<string>
        {
            "--no-huge", "-m", "512", "--no-pci", "--file-prefix", prefix, "-l", "0,1",
            "--log-level=lib.vhost.config:debug",
            "--vdev", $"net_vhost0,iface={socketPath},queues=1",
            "--", "--nb-cores=1", "--total-num-mbufs=8192", "--forward-mode=" + forwardMode,
            // Non-interactive and not waiting for stdin: with a stats period testpmd runs until SIGTERM.
            "--stats-period=3600",
        };
        var process = ExternalProcess.Start(new ExternalProcessOptions("dpdk", testpmd, args, run.Directory, timeout ?? TimeSpan.FromMinutes(6)));
        run.AddArtifact($"DPDK testpmd log (pid {process.Pid})", process.StdoutPath);
        run.AddArtifact("DPDK testpmd stderr", process.StderrPath);
        var backend = new DpdkVhostBackend(process, prefix);
        if (!await LogFile.WaitForPathAsync(socketPath, TimeSpan.FromSeconds(60), process).ConfigureAwait(false))
        {
            await backend.DisposeAsync().ConfigureAwait(false);
            throw new InvalidOperationException($"dpdk-testpmd did not create {socketPath}: {process.CommandLine}{run.Diagnostics()}");
        }

        return backend;
    }

    /// <summary>vhost-user messages as DPDK logged them on stderr ("read message VHOST_USER_X").</summary>
    public IReadOnlyList<string> Requests() =>
        LogFile.ReadLines(Process.StderrPath)
            .Select(l => l.IndexOf("read message VHOST_USER_", StringComparison.Ordinal) is var i and >= 0 ? l[(i + "read message VHOST_USER_".Length)..].Split(' ')[0] : null)
            .OfType<string>()
            .ToList();

    public async ValueTask DisposeAsync()
    {
        await Process.DisposeAsync().ConfigureAwait(false);
        // EAL's runtime directory of this instance only.
        var runtimeDir = Path.Combine("/var/run/dpdk", _prefix);
        if (Directory.Exists(runtimeDir))
        {
            try
            {
                Directory.Delete(runtimeDir, recursive: true);
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }
    }
}
