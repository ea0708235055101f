using System.Globalization;
using System.Text.RegularExpressions;

namespace VhostCompat.InteropTests.Harness;

/// <summary>testpmd's forward statistics for one port, printed when it stops ("RX-packets: N ... TX-packets: N").</summary>
public sealed record TestpmdPortStatistics(long RxPackets, long RxDropped, long TxPackets, long TxDropped)
{
    private static readonly Regex Block = new(
        @"Forward statistics for port (?<port>\d+)\s*-+\s*RX-packets:\s*(?<rx>\d+)\s+RX-dropped:\s*(?<rxd>\d+).*?TX-packets:\s*(?<tx>\d+)\s+TX-dropped:\s*(?<txd>\d+)",
        RegexOptions.CultureInvariant | RegexOptions.Singleline);

    /// <summary>The last statistics block for <paramref name="port"/> in testpmd's stdout, or null.</summary>
    public static TestpmdPortStatistics? Parse(string stdout, int port = 0)
    {
        ArgumentNullException.ThrowIfNull(stdout);
        TestpmdPortStatistics? last = null;
        foreach (Match m in Block.Matches(stdout))
        {
            if (int.Parse(m.Groups["port"].Value, CultureInfo.InvariantCulture) == port)
            {
                last = new TestpmdPortStatistics(
                    long.Parse(m.Groups["rx"].Value, CultureInfo.InvariantCulture),
                    long.Parse(m.Groups["rxd"].Value, CultureInfo.InvariantCulture),
                    long.Parse(m.Groups["tx"].Value, CultureInfo.InvariantCulture),
                    long.Parse(m.Groups["txd"].Value, CultureInfo.InvariantCulture));
            }
        }

        return last;
    }
}

/// <summary>
/// DPDK's virtio-user PMD (dpdk-testpmd --vdev net_virtio_user0,path=SOCK) as a second, independent vhost-user
/// frontend: it connects to a backend's listening socket and drives the rings from user space. In icmpecho mode it
/// answers ARP requests (for any address) and ICMP echo requests. Runs without hugepages (--no-huge, memfd memory
/// the backend can map) under a unique --file-prefix whose /var/run/dpdk directory is removed on dispose.
/// </summary>
public sealed class DpdkVirtioUserFrontend : IAsyncDisposable
{
    /// <summary>testpmd prints this when forwarding has started (after the port is configured and started).</summary>
    private static readonly Regex Forwarding = new(@"packet forwarding - ports=\d+", RegexOptions.CultureInvariant);

    private const string StdbufPath = "/usr/bin/stdbuf";

    private readonly string _prefix;

    private DpdkVirtioUserFrontend(ExternalProcess process, string prefix, string mac)
    {
        Process = process;
        _prefix = prefix;
        Mac = mac;
    }

    public ExternalProcess Process { get; }

    /// <summary>MAC address of the virtio-user port (given on the command line).</summary>
    public string Mac { get; }

    /// <summary>testpmd's stdout: configuration, forwarding start and, after it stops, the forward statistics.</summary>
    public string LogPath => Process.StdoutPath;

    /// <summary>
    /// Starts testpmd as a virtio-user frontend of the backend listening on <paramref name="socketPath"/> and waits
    /// until it forwards (the vhost-user handshake with the backend is complete by then).
    /// </summary>
    public static async Task<DpdkVirtioUserFrontend> StartAsync(
        InteropRun run, string testpmd, string socketPath, string mac, string forwardMode = "icmpecho", string name = "testpmd", TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(run);
        ArgumentNullException.ThrowIfNull(testpmd);
        var prefix = "vcvu" + Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + Path.GetFileName(run.Directory)[^6..];
        var args = new List<string>
        {
            "--no-huge", "-m", "512", "--no-pci", "--file-prefix", prefix, "-l", "0,1",
            "--vdev", $"net_virtio_user0,path={socketPath},mac={mac},queues=1",
            "--", "--nb-cores=1", "--total-num-mbufs=8192", "--forward-mode=" + forwardMode,
            // Non-interactive, auto-started, not reading stdin: testpmd forwards until SIGTERM, then prints its statistics.
            "--stats-period=3600", "-a",
        };
        // testpmd's stdout is a file, so stdio buffers it in 4 KiB blocks: nothing is visible while it runs and the
        // tail is lost if it has to be killed. stdbuf (coreutils) makes it line-buffered.
        var fileName = testpmd;
        if (File.Exists(StdbufPath))
        {
            args.InsertRange(0, ["-oL", "-eL", testpmd]);
            fileName = StdbufPath;
        }

        var process = ExternalProcess.Start(new ExternalProcessOptions(name, fileName, args, run.Directory, timeout ?? TimeSpan.FromMinutes(6)));
        run.AddArtifact($"DPDK testpmd virtio-user log ({name}, pid {process.Pid})", process.StdoutPath);
        run.AddArtifact($"DPDK testpmd virtio-user stderr ({name})", process.StderrPath);
        var frontend = new DpdkVirtioUserFrontend(process, prefix, mac);
        if (fileName == testpmd)
        {
            // Block-buffered stdout shows nothing yet: give EAL and the vhost-user handshake time instead.
            await Task.Delay(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
            if (!process.HasExited)
            {
                return frontend;
            }
        }

        if (await LogFile.WaitForLineAsync(process.StdoutPath, Forwarding, TimeSpan.FromSeconds(60), process).ConfigureAwait(false) is null)
        {
            var why = process.HasExited ? $"exited with {process.ExitCode}" : "still running after 60 s";
            await frontend.DisposeAsync().ConfigureAwait(false);
            throw new InvalidOperationException($"dpdk-testpmd (virtio-user on {socketPath}) never started forwarding ({why}): {process.CommandLine}{run.Diagnostics()}");
        }

        return frontend;
    }

    /// <summary>Forward statistics of port 0, available after <see cref="StopAsync"/>.</summary>
    public TestpmdPortStatistics? Statistics() => TestpmdPortStatistics.Parse(Process.ReadStdout());

    /// <summary>SIGTERM (testpmd stops forwarding, prints statistics, closes the port), then kill by PID.</summary>
    public Task StopAsync() => Process.StopAsync(TimeSpan.FromSeconds(15));

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
