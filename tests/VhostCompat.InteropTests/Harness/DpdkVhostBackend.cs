using System.Globalization;
using System.Text.RegularExpressions;

namespace VhostCompat.InteropTests.Harness;

/// <summary>
/// DPDK's vhost PMD (dpdk-testpmd, package dpdk-dev) as a reference vhost-user backend, in icmpecho mode (answers
/// ARP and ICMP echo). Used to show that QEMU + kernel + initramfs work on this machine independently of our code.
/// Runs without hugepages (--no-huge: EAL memory is memfd and shareable).
/// </summary>
public sealed class DpdkVhostBackend : IAsyncDisposable
{
    /// <summary>lib/vhost on SET_FEATURES (22.11 and 24.11): "negotiated Virtio features: 0x...".</summary>
    public static readonly Regex NegotiatedVirtio = new(@"negotiated Virtio features: 0x(?<hex>[0-9a-fA-F]+)", RegexOptions.CultureInvariant);

    /// <summary>lib/vhost on SET_PROTOCOL_FEATURES: "negotiated Vhost-user protocol features: 0x...".</summary>
    public static readonly Regex NegotiatedProtocol = new(@"negotiated Vhost-user protocol features: 0x(?<hex>[0-9a-fA-F]+)", RegexOptions.CultureInvariant);

    private readonly string _prefix;

    private DpdkVhostBackend(ExternalProcess process, string prefix)
    {
        Process = process;
        _prefix = prefix;
    }

    public ExternalProcess Process { get; }

    public static string? TestpmdPath =>
        Environment.GetEnvironmentVariable("VHOSTCOMPAT_TESTPMD") is { Length: > 0 } p ? p : InteropPrerequisites.FindInPath("dpdk-testpmd");

    /// <summary>
    /// Starts testpmd listening on <paramref name="socketPath"/> and waits for the socket. <paramref name="devargs"/> are
    /// extra vhost PMD devargs (e.g. "tso=1"); <paramref name="name"/> names the log files and, when not the default,
    /// goes into EAL's --file-prefix, so two instances in one run directory do not share a runtime directory.
    /// </summary>
    public static async Task<DpdkVhostBackend> StartAsync(
        InteropRun run, string testpmd, string socketPath, string forwardMode = "icmpecho", TimeSpan? timeout = null, string devargs = "", string name = "dpdk")
    {
        ArgumentNullException.ThrowIfNull(run);
        ArgumentNullException.ThrowIfNull(devargs);
        ArgumentNullException.ThrowIfNull(name);
        File.Delete(socketPath);
        var tag = name == "dpdk" ? string.Empty : new string([.. name.Where(char.IsAsciiLetterOrDigit)]);
        var prefix = "vhostcompat" + Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + Path.GetFileName(run.Directory)[^6..] + tag;
        var args = new List<string>
        {
            "--no-huge", "-m", "512", "--no-pci", "--file-prefix", prefix, "-l", "0,1",
            "--log-level=lib.vhost.config:debug",
            "--vdev", $"net_vhost0,iface={socketPath},queues=1" + (devargs.Length > 0 ? "," + devargs : string.Empty),
            "--", "--nb-cores=1", "--total-num-mbufs=8192", "--forward-mode=" + forwardMode,
            // Non-interactive and not waiting for stdin: with a stats period testpmd runs until SIGTERM.
            "--stats-period=3600",
        };
        var process = ExternalProcess.Start(new ExternalProcessOptions(name, testpmd, args, run.Directory, timeout ?? TimeSpan.FromMinutes(6)));
        run.AddArtifact($"DPDK testpmd log ({name}, pid {process.Pid})", process.StdoutPath);
        run.AddArtifact($"DPDK testpmd stderr ({name})", process.StderrPath);
        var backend = new DpdkVhostBackend(process, prefix);
        if (!await LogFile.WaitForPathAsync(socketPath, TimeSpan.FromSeconds(60), process).ConfigureAwait(false))
        {
            await backend.DisposeAsync().ConfigureAwait(false);
            throw new InvalidOperationException($"dpdk-testpmd did not create {socketPath}: {process.CommandLine}{run.Diagnostics()}");
        }

        return backend;
    }

    /// <summary>vhost-user messages as DPDK logged them ("read message VHOST_USER_X"; stderr, then stdout).</summary>
    public IReadOnlyList<string> Requests() =>
        LogFile.ReadLines(Process.StderrPath).Concat(LogFile.ReadLines(Process.StdoutPath))
            .Select(l => l.IndexOf("read message VHOST_USER_", StringComparison.Ordinal) is var i and >= 0 ? l[(i + "read message VHOST_USER_".Length)..].Split(' ')[0] : null)
            .OfType<string>()
            .ToList();

    /// <summary>
    /// Values of <paramref name="pattern"/>'s hex group in testpmd's log (stderr, then stdout: where EAL logs depends on
    /// the DPDK version), in order: one per SET_FEATURES / SET_PROTOCOL_FEATURES of every session.
    /// </summary>
    public IReadOnlyList<ulong> Negotiated(Regex pattern)
    {
        ArgumentNullException.ThrowIfNull(pattern);
        return LogFile.ReadLines(Process.StderrPath).Concat(LogFile.ReadLines(Process.StdoutPath))
            .Select(l => pattern.Match(l))
            .Where(m => m.Success)
            .Select(m => ulong.Parse(m.Groups["hex"].Value, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture))
            .ToList();
    }

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
