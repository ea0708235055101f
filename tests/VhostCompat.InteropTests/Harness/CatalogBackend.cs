using System.Globalization;
using System.Text.RegularExpressions;
using VhostCompat.Compat;

namespace VhostCompat.InteropTests.Harness;

/// <summary>
/// The real backend a shipped catalog entry (src/VhostCompat.Cli/catalogs/) was probed from, found from the entry's
/// <see cref="ProfileSource.Backend"/> and started as its source says, with the same command line as
/// catalogs/probe-real-backends.sh:
/// <list type="bullet">
/// <item><c>dpdk-testpmd 22.11.x</c> / <c>24.11.x</c> (<see cref="DpdkPeer"/>): <c>--no-huge -m 512 --no-pci -l 0,1 --vdev
/// net_vhost0,iface=SOCK[,DEVARGS] -- --nb-cores=1 --total-num-mbufs=8192 --forward-mode=icmpecho --stats-period=3600</c>;</item>
/// <item><c>qemu-storage-daemon 7.2.x</c> (VHOSTCOMPAT_QSD or PATH): a 64 MiB raw file, <c>--blockdev
/// driver=file,node-name=disk,filename=IMG --export type=vhost-user-blk,id=export,node-name=disk,addr.type=unix,addr.path=SOCK,DEVARGS</c>.</item>
/// </list>
/// </summary>
public sealed partial class CatalogBackend : IAsyncDisposable
{
    private readonly string? _dpdkRuntimeDir;

    private CatalogBackend(ExternalProcess process, string socket, string? dpdkRuntimeDir)
    {
        Process = process;
        Socket = socket;
        _dpdkRuntimeDir = dpdkRuntimeDir;
    }

    public ExternalProcess Process { get; }

    /// <summary>The backend's vhost-user socket.</summary>
    public string Socket { get; }

    [GeneratedRegex(@"^(?<product>dpdk-testpmd|qemu-storage-daemon) (?<series>[0-9]+\.[0-9]+)(\.[0-9]+)*$", RegexOptions.CultureInvariant)]
    private static partial Regex BackendText();

    [GeneratedRegex(@"qemu-storage-daemon version (?<v>[0-9][0-9.]*)", RegexOptions.CultureInvariant)]
    private static partial Regex QsdVersion();

    /// <summary>VHOSTCOMPAT_QSD or qemu-storage-daemon in PATH.</summary>
    public static string? QsdPath =>
        Environment.GetEnvironmentVariable("VHOSTCOMPAT_QSD") is { Length: > 0 } p ? p : InteropPrerequisites.FindInPath("qemu-storage-daemon");

    /// <summary>
    /// The installed peer's version, or why it cannot be used (absent, or another version series than the source's).
    /// A source naming a backend this harness does not know is a test failure, not a skip.
    /// </summary>
    public static (string? Version, string? Problem) CheckPeer(ProfileSource source)
    {
        ArgumentNullException.ThrowIfNull(source);
        var (product, series) = Parse(source);
        if (product == "dpdk-testpmd")
        {
            var peer = series switch
            {
                "22.11" => DpdkPeer.Dpdk2211,
                "24.11" => DpdkPeer.Dpdk2411,
                _ => throw new InvalidOperationException($"no DPDK {series} peer is provisioned for '{source.Backend}' (Harness/Peers.cs)"),
            };
            return PeerCheck.DpdkVersionOf(peer);
        }

        if (QsdPath is not { } qsd || !File.Exists(qsd))
        {
            return (null, "qemu-storage-daemon not found (package qemu-system-common; or set VHOSTCOMPAT_QSD)");
        }

        var psi = new System.Diagnostics.ProcessStartInfo(qsd, "--version") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        using var p = System.Diagnostics.Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {qsd}");
        string output = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
        p.WaitForExit(TimeSpan.FromSeconds(30));
        var m = QsdVersion().Match(output);
        if (!m.Success)
        {
            return (null, $"'{qsd} --version' printed no version: {output.Trim()}");
        }

        string v = m.Groups["v"].Value;
        return v.StartsWith(series + ".", StringComparison.Ordinal) ? (v, null) : (v, $"{qsd} is qemu-storage-daemon {v}, expected {series}.x");
    }

    /// <summary>The device type <c>vhost-compat probe --type</c> needs for the source's backend.</summary>
    public static string ProbeType(ProfileSource source) => Parse(source).Product == "dpdk-testpmd" ? "net" : "block";

    /// <summary>Starts the source's backend in <paramref name="run"/>'s directory and waits for its socket.</summary>
    public static async Task<CatalogBackend> StartAsync(InteropRun run, ProfileSource source)
    {
        ArgumentNullException.ThrowIfNull(run);
        ArgumentNullException.ThrowIfNull(source);
        var (product, series) = Parse(source);
        string devargs = source.Devargs ?? string.Empty;
        string tag = new([.. series.Where(char.IsAsciiDigit)]);
        ExternalProcess process;
        string socket;
        string? runtimeDir = null;
        if (product == "dpdk-testpmd")
        {
            var testpmd = (series == "22.11" ? DpdkPeer.Dpdk2211 : DpdkPeer.Dpdk2411).Testpmd!;
            socket = run.PathFor($"vnet{tag}.sock");
            string prefix = "vccat" + Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + Path.GetFileName(run.Directory)[^6..];
            runtimeDir = Path.Combine("/var/run/dpdk", prefix);
            File.Delete(socket);
            process = ExternalProcess.Start(new ExternalProcessOptions("testpmd" + tag, testpmd,
            [
                "--no-huge", "-m", "512", "--no-pci", "--file-prefix", prefix, "-l", "0,1",
                "--vdev", $"net_vhost0,iface={socket}" + (devargs.Length > 0 ? "," + devargs : string.Empty),
                "--", "--nb-cores=1", "--total-num-mbufs=8192", "--forward-mode=icmpecho", "--stats-period=3600",
            ], run.Directory, TimeSpan.FromMinutes(3)));
        }
        else
        {
            socket = run.PathFor($"blk{tag}.sock");
            string image = run.PathFor($"disk{tag}.img");
            await using (var fs = new FileStream(image, FileMode.Create, FileAccess.Write))
            {
                fs.SetLength(64L << 20);
            }

            File.Delete(socket);
            process = ExternalProcess.Start(new ExternalProcessOptions("qsd" + tag, QsdPath!,
            [
                "--blockdev", $"driver=file,node-name=disk,filename={image}",
                "--export", $"type=vhost-user-blk,id=export,node-name=disk,addr.type=unix,addr.path={socket}" + (devargs.Length > 0 ? "," + devargs : string.Empty),
            ], run.Directory, TimeSpan.FromMinutes(3)));
        }

        run.AddArtifact($"{source.Backend} stdout (pid {process.Pid})", process.StdoutPath);
        run.AddArtifact($"{source.Backend} stderr", process.StderrPath);
        var backend = new CatalogBackend(process, socket, runtimeDir);
        if (!await LogFile.WaitForPathAsync(socket, TimeSpan.FromSeconds(60), process).ConfigureAwait(false))
        {
            await backend.DisposeAsync().ConfigureAwait(false);
            throw new InvalidOperationException($"{source.Backend} did not create {socket}: {process.CommandLine}{run.Diagnostics()}");
        }

        return backend;
    }

    public async ValueTask DisposeAsync()
    {
        await Process.DisposeAsync().ConfigureAwait(false);
        if (_dpdkRuntimeDir is not null && Directory.Exists(_dpdkRuntimeDir))
        {
            try
            {
                Directory.Delete(_dpdkRuntimeDir, recursive: true);
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }
    }

    private static (string Product, string Series) Parse(ProfileSource source)
    {
        var m = BackendText().Match(source.Backend);
        return m.Success
            ? (m.Groups["product"].Value, m.Groups["series"].Value)
            : throw new InvalidOperationException($"catalog source backend '{source.Backend}' is not 'dpdk-testpmd X.Y[.Z]' or 'qemu-storage-daemon X.Y[.Z]'");
    }
}
