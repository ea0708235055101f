using System.Globalization;
using VhostCompat.Compat;

namespace VhostCompat.InteropTests.Harness;

/// <summary>
/// One host of a migration between DPDK backends: dpdk-testpmd (vhost PMD, icmpecho) with its own devargs and, in front
/// of it, its own <c>vhost-compat proxy</c> (<c>--state-dir</c>, <c>--state-key</c>, optionally <c>--compat-profile</c>)
/// listening on the socket the VM's QEMU connects to: what an operator runs per host.
/// </summary>
public sealed class ProxiedDpdkHost : IAsyncDisposable
{
    private static readonly TimeSpan StepTimeout = TimeSpan.FromSeconds(90);

    private ProxiedDpdkHost(string name, string devargs, string? pin, DpdkVhostBackend dpdk, ProxyProcess proxy, string backendSocket, string frontendSocket,
        AckedStateStore store, string key)
    {
        Name = name;
        Devargs = devargs;
        Pin = pin;
        Dpdk = dpdk;
        Proxy = proxy;
        BackendSocket = backendSocket;
        FrontendSocket = frontendSocket;
        Store = store;
        Key = key;
    }

    /// <summary>"A" / "B": names the log files.</summary>
    public string Name { get; }

    /// <summary>The vhost PMD devargs ("tso=1", or empty for DPDK's defaults).</summary>
    public string Devargs { get; }

    /// <summary>The proxy's <c>--compat-profile</c>, or null (unpinned: the proxy passes DPDK's offer through).</summary>
    public string? Pin { get; }

    public DpdkVhostBackend Dpdk { get; }

    public ProxyProcess Proxy { get; }

    /// <summary>DPDK's socket (iface=).</summary>
    public string BackendSocket { get; }

    /// <summary>The proxy's socket: QEMU's chardev path.</summary>
    public string FrontendSocket { get; }

    /// <summary>The proxy's acked-state records.</summary>
    public AckedStateStore Store { get; }

    public string Key { get; }

    public string RecordPath => Store.PathFor(Key);

    /// <summary>"host A (DPDK tso=1, proxy unpinned)".</summary>
    public string Label => $"host {Name} (DPDK {(Devargs.Length > 0 ? Devargs : "defaults")}, proxy {(Pin is null ? "unpinned" : "pinned")})";

    /// <summary>DPDK's socket for <paramref name="name"/>, so a caller can probe a DPDK before its proxy starts.</summary>
    public static string BackendSocketFor(InteropRun run, string name)
    {
        ArgumentNullException.ThrowIfNull(run);
        return run.PathFor($"dpdk-{name}.sock");
    }

    /// <summary>Starts DPDK (unless <paramref name="dpdk"/> already runs on <see cref="BackendSocketFor"/>), then the proxy, and waits until the proxy has checked DPDK.</summary>
    public static async Task<ProxiedDpdkHost> StartAsync(InteropRun run, string testpmd, string name, string devargs, string key, string? pin, DpdkVhostBackend? dpdk = null)
    {
        ArgumentNullException.ThrowIfNull(run);
        ArgumentNullException.ThrowIfNull(name);
        var backendSocket = BackendSocketFor(run, name);
        dpdk ??= await StartDpdkAsync(run, testpmd, name, devargs).ConfigureAwait(false);
        var frontendSocket = run.PathFor($"vm-{name}.sock");
        var store = new AckedStateStore(run.PathFor($"state-{name}"));
        var args = new List<string> { "--listen", frontendSocket, "--backend", backendSocket, "--state-dir", store.Directory, "--state-key", key };
        if (pin is not null)
        {
            args.AddRange(["--compat-profile", pin]);
        }

        var proxy = ProxyProcess.Start(run, $"proxy-{name}", args, timeout: TimeSpan.FromMinutes(10));
        var host = new ProxiedDpdkHost(name, devargs, pin, dpdk, proxy, backendSocket, frontendSocket, store, key);
        if (await proxy.WaitForAsync(ProxyProcess.Checked(), StepTimeout).ConfigureAwait(false) is null)
        {
            var log = LogFile.Tail(proxy.LogPath, 4000);
            await host.DisposeAsync().ConfigureAwait(false);
            throw new InvalidOperationException($"the proxy of host {name} never checked its DPDK:\n{log}{run.Diagnostics()}");
        }

        return host;
    }

    /// <summary>dpdk-testpmd for host <paramref name="name"/> on <see cref="BackendSocketFor"/>.</summary>
    public static Task<DpdkVhostBackend> StartDpdkAsync(InteropRun run, string testpmd, string name, string devargs) =>
        DpdkVhostBackend.StartAsync(run, testpmd, BackendSocketFor(run, name), timeout: TimeSpan.FromMinutes(10), devargs: devargs, name: $"dpdk-{name}");

    /// <summary>
    /// The pinging guest's options for this host (the same for every QEMU of the VM, as a migration needs), waiting on
    /// <c>-incoming tcp:127.0.0.1:PORT</c> when <paramref name="incomingPort"/> is given.
    /// </summary>
    public QemuGuestOptions GuestOptions(int? incomingPort)
    {
        var o = new QemuGuestOptions { SocketPath = FrontendSocket, ReconnectSeconds = 1, Timeout = TimeSpan.FromMinutes(10) };
        o.GuestParameters["mode"] = "loop";
        o.GuestParameters["pingloop"] = "1";
        o.GuestParameters["ip"] = "10.0.0.2/24";
        o.GuestParameters["peer"] = "10.0.0.1";
        if (incomingPort is { } p)
        {
            o.ExtraArguments.Add("-incoming");
            o.ExtraArguments.Add($"tcp:127.0.0.1:{p.ToString(CultureInfo.InvariantCulture)}");
        }

        return o;
    }

    /// <summary>
    /// <c>vhost-compat proxy --backend DPDK_SOCKET [--compat-profile PIN] --print-capabilities</c>: this host's capability
    /// document as a VM would see it through the proxy (DPDK probed live, beside the running proxy), saved as caps-LABEL.json.
    /// </summary>
    public async Task<(string Path, VhostCompat.Compat.BackendCapabilities Capabilities)> PrintCapabilitiesAsync(InteropRun run, string label)
    {
        ArgumentNullException.ThrowIfNull(run);
        var args = new List<string> { "proxy", "--backend", BackendSocket };
        if (Pin is not null)
        {
            args.AddRange(["--compat-profile", Pin]);
        }

        args.Add("--print-capabilities");
        var r = await CompatCli.RunAsync(run, $"print-capabilities-{label}", args, TimeSpan.FromSeconds(60)).ConfigureAwait(false);
        if (r.ExitCode != 0)
        {
            throw new InvalidOperationException($"vhost-compat proxy --print-capabilities failed for host {Name}: {r}");
        }

        var path = run.PathFor($"caps-{label}.json");
        await File.WriteAllTextAsync(path, r.Stdout).ConfigureAwait(false);
        return (path, CapabilityDocument.Load(path));
    }

    /// <summary>Waits for the proxy's acked-state record of <see cref="Key"/> and loads it.</summary>
    public async Task<AckedStateRecord> WaitForRecordAsync(InteropRun run)
    {
        ArgumentNullException.ThrowIfNull(run);
        if (!await LogFile.WaitForPathAsync(RecordPath, TimeSpan.FromSeconds(30), Proxy.Process).ConfigureAwait(false))
        {
            Assert.Fail($"the proxy of host {Name} wrote no acked-state record {RecordPath}\n{LogFile.Tail(Proxy.LogPath, 4000)}{run.Diagnostics()}");
        }

        return Store.Load(Key)!;
    }

    public async ValueTask DisposeAsync()
    {
        await Proxy.DisposeAsync().ConfigureAwait(false);
        await Dpdk.DisposeAsync().ConfigureAwait(false);
    }
}
