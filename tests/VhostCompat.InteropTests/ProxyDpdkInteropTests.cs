using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using VhostCompat.Compat;
using VhostCompat.InteropTests.Harness;
using Xunit.Abstractions;

namespace VhostCompat.InteropTests;

/// <summary>
/// The seed's scenario with DPDK behind <c>vhost-compat proxy</c>: a QEMU 7.2 guest pings through the proxy to DPDK
/// 22.11's vhost PMD (icmpecho); DPDK is killed and DPDK 24.11 started with the same devargs: the proxy checks it
/// against the acked-state record it wrote and the pings resume. Then a DPDK without an acked feature (24.11 with the
/// default tso=0 where the guest acked host_tso4/6) is refused by the proxy, naming the features, and QEMU never sees
/// its narrower offer ("vhost lacks feature mask" never appears); once the operator restarts DPDK with tso=1 again,
/// the proxy lets QEMU back in and the pings resume.
/// </summary>
[Collection(QemuCollection.Name)]
[Trait("Category", "Interop")]
public sealed partial class ProxyDpdkInteropTests(ITestOutputHelper output)
{
    private static readonly TimeSpan GuestStatusTimeout = TimeSpan.FromSeconds(
        int.TryParse(Environment.GetEnvironmentVariable("VHOSTCOMPAT_INTEROP_BOOT_TIMEOUT"), CultureInfo.InvariantCulture, out var s) ? s : 180);

    private static readonly TimeSpan StepTimeout = TimeSpan.FromSeconds(90);

    private static readonly Regex LacksFeatureMask = new(@"vhost lacks feature mask", RegexOptions.CultureInvariant);

    private static readonly ulong HostTso = (1UL << 11) | (1UL << 12);

    private readonly Stopwatch _clock = Stopwatch.StartNew();

    [SkippableFact]
    public async Task Guest_pings_through_the_proxy_across_a_DPDK_upgrade_and_a_narrower_DPDK_is_refused_before_QEMU_sees_it()
    {
        var tools = InteropPrerequisites.RequireQemuGuest(QemuPeer.Qemu72);
        var (old, oldVersion) = RequireDpdk(DpdkPeer.Dpdk2211);
        var (neu, newVersion) = RequireDpdk(DpdkPeer.Dpdk2411);
        var run = InteropRun.Create(nameof(Guest_pings_through_the_proxy_across_a_DPDK_upgrade_and_a_narrower_DPDK_is_refused_before_QEMU_sees_it));
        var backendSocket = run.PathFor("dpdk.sock");
        var frontendSocket = run.PathFor("vm1-net0.sock");
        var stateDir = run.PathFor("state");
        Log($"run directory {run.Directory}; QEMU {tools.QemuVersion}; DPDK {oldVersion} -> {newVersion}");
        var started = new List<DpdkVhostBackend>();
        try
        {
            await RunScenarioAsync(run, tools, old, oldVersion, neu, newVersion, backendSocket, frontendSocket, stateDir, started);
        }
        finally
        {
            foreach (var b in started)
            {
                await b.DisposeAsync();
            }
        }
    }

    private async Task RunScenarioAsync(InteropRun run, InteropTools tools, string old, string oldVersion, string neu, string newVersion,
        string backendSocket, string frontendSocket, string stateDir, List<DpdkVhostBackend> started)
    {
        async Task<DpdkVhostBackend> StartDpdk(string testpmd, string devargs, string name)
        {
            var b = await DpdkVhostBackend.StartAsync(run, testpmd, backendSocket, timeout: TimeSpan.FromMinutes(7), devargs: devargs, name: name);
            started.Add(b);
            return b;
        }

        // 1. DPDK 22.11 with tso=1 behind the proxy; the proxy checks it before it listens for QEMU.
        var dpdk = await StartDpdk(old, "tso=1", "dpdk-22.11-tso");
        await using var proxy = ProxyProcess.Start(run, "proxy", ["--listen", frontendSocket, "--backend", backendSocket, "--state-dir", stateDir, "--state-key", "vm1.net0"]);
        var checkedLine = await proxy.WaitForAsync(ProxyProcess.Checked(), StepTimeout) ?? throw Fail(run, proxy, "the proxy never checked DPDK 22.11");
        Log($"proxy: {checkedLine.Value}");

        // 2. The guest pings 10.0.0.1 (testpmd icmpecho) through the proxy.
        var options = new QemuGuestOptions { SocketPath = frontendSocket, ReconnectSeconds = 1, Timeout = TimeSpan.FromMinutes(7) };
        options.GuestParameters["mode"] = "loop";
        options.GuestParameters["pingloop"] = "1";
        options.GuestParameters["ip"] = "10.0.0.2/24";
        options.GuestParameters["peer"] = "10.0.0.1";
        await using var guest = await QemuGuest.StartAsync(run, tools, options);
        var status = await guest.WaitForNetStatusAsync(GuestStatusTimeout) ?? throw Fail(run, proxy, $"the guest never printed its virtio-net status ({guest.Observed()})");
        var flowing = await MatrixGuest.WaitForRepliesAsync(guest, after: -1, count: 3, StepTimeout);
        Assert.True(flowing.Count >= 3, $"no ping replies through the proxy to DPDK {oldVersion} ({guest.Observed()}){run.Diagnostics()}");
        Log($"guest status 0x{status.Status:x2}, acked 0x{status.Features:x}; replies seq {string.Join(',', flowing)}");

        // 3. The record the proxy wrote is what DPDK negotiated; the trace shows fds passed through, typed.
        var acked = dpdk.Negotiated(DpdkVhostBackend.NegotiatedVirtio)[^1];
        var record = new AckedStateStore(stateDir).Load("vm1.net0") ?? throw Fail(run, proxy, "the proxy wrote no acked-state record");
        Log($"record: acked 0x{record.AckedFeatures:x} protocol 0x{record.AckedProtocolFeatures:x}; DPDK logged SET_FEATURES 0x{acked:x}");
        Assert.Equal(acked, record.AckedFeatures);
        Assert.Equal(HostTso, record.AckedFeatures & HostTso);
        var trace = LogFile.ReadAll(proxy.TracePath!);
        Assert.Matches(@"F>B (SET_MEM_TABLE|ADD_MEM_REG) .*memfd", trace);
        Assert.Matches(@"F>B SET_VRING_KICK .*eventfd", trace);

        // 4. Kill DPDK 22.11; start 24.11 with the same devargs: the proxy re-checks, QEMU reconnects, the pings resume.
        await KillAsync(run, dpdk, oldVersion);
        int baseline = MatrixGuest.Replies(guest.ConsolePath).Max();
        dpdk = await StartDpdk(neu, "tso=1", "dpdk-24.11-tso");
        _ = await proxy.WaitForAsync(ProxyProcess.Checked(), StepTimeout, nth: 2) ?? throw Fail(run, proxy, $"the proxy never checked DPDK {newVersion}");
        var resumed = await MatrixGuest.WaitForRepliesAsync(guest, baseline, 3, StepTimeout);
        Assert.True(resumed.Count >= 3, $"pings did not resume through the proxy to DPDK {newVersion} tso=1 ({guest.Observed()}){run.Diagnostics()}");
        Log($"DPDK {newVersion} tso=1: replies resumed (seq {string.Join(',', resumed)})");

        // 5. Kill it; start 24.11 with the default tso=0, which lacks what the guest acked: the proxy refuses it, QEMU stays out.
        await KillAsync(run, dpdk, newVersion);
        int checksBefore = proxy.Matches(ProxyProcess.Checked()).Count;
        int frontendsBefore = proxy.Matches(ProxyProcess.FrontendConnected()).Count;
        baseline = MatrixGuest.Replies(guest.ConsolePath).Max();
        dpdk = await StartDpdk(neu, string.Empty, "dpdk-24.11");
        var refused = await proxy.WaitForAsync(ProxyProcess.Refused(), StepTimeout) ?? throw Fail(run, proxy, $"the proxy did not refuse DPDK {newVersion} without tso");
        Log($"proxy refused: {refused.Groups["problems"].Value}");
        Assert.Contains("host_tso4", refused.Groups["problems"].Value, StringComparison.Ordinal);
        Assert.Contains("host_tso6", refused.Groups["problems"].Value, StringComparison.Ordinal);
        // Three refusals are ≥ 4 s: QEMU (reconnect=1) tried to come back several times meanwhile.
        _ = await proxy.WaitForAsync(ProxyProcess.Refused(), StepTimeout, nth: 3) ?? throw Fail(run, proxy, "the proxy stopped re-checking the refused backend");
        Assert.Equal(checksBefore, proxy.Matches(ProxyProcess.Checked()).Count);
        Assert.Equal(frontendsBefore, proxy.Matches(ProxyProcess.FrontendConnected()).Count);
        Assert.DoesNotMatch(LacksFeatureMask, LogFile.ReadAll(guest.Process.StderrPath));
        Assert.DoesNotContain(MatrixGuest.Replies(guest.ConsolePath), seq => seq > baseline);
        Log($"QEMU kept out: no new frontend session, no 'vhost lacks feature mask', no replies after seq {baseline}");

        // 6. The operator restarts DPDK with tso=1: the proxy lets QEMU back in and the guest's interface is unchanged.
        await KillAsync(run, dpdk, newVersion);
        dpdk = await StartDpdk(neu, "tso=1", "dpdk-24.11-tso-again");
        _ = await proxy.WaitForAsync(ProxyProcess.Checked(), StepTimeout, nth: checksBefore + 1) ?? throw Fail(run, proxy, "the proxy never checked the restored DPDK");
        var again = await MatrixGuest.WaitForRepliesAsync(guest, baseline, 3, StepTimeout);
        Assert.True(again.Count >= 3, $"pings did not resume after DPDK tso=1 came back ({guest.Observed()}){run.Diagnostics()}");
        Assert.Equal(acked, dpdk.Negotiated(DpdkVhostBackend.NegotiatedVirtio)[^1]);
        Log($"restored: replies resumed (seq {string.Join(',', again)}), DPDK {newVersion} negotiated the same 0x{acked:x}");
    }

    private async Task KillAsync(InteropRun run, DpdkVhostBackend dpdk, string version)
    {
        int pid = dpdk.Process.ProgramPid();
        Assert.True(Kill(pid, 9) == 0, $"kill -9 {pid}: errno {Marshal.GetLastPInvokeError()}");
        Assert.True(await dpdk.Process.WaitForExitAsync(TimeSpan.FromSeconds(10)), $"testpmd {version} survived SIGKILL{run.Diagnostics()}");
        await dpdk.DisposeAsync();
        Log($"kill -9 testpmd {version} (pid {pid})");
    }

    private static Xunit.Sdk.XunitException Fail(InteropRun run, ProxyProcess proxy, string what) =>
        new Xunit.Sdk.XunitException($"{what}\n--- proxy log ---\n{LogFile.Tail(proxy.LogPath, 6000)}{run.Diagnostics()}");

    private static (string Testpmd, string Version) RequireDpdk(DpdkPeer peer)
    {
        var (version, problem) = PeerCheck.DpdkVersionOf(peer);
        PeerCheck.SkipOrFail(problem);
        return (peer.Testpmd!, version!);
    }

    private void Log(string line) => output.WriteLine($"[{_clock.Elapsed.TotalSeconds,6:F1} s] {line}");

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);
}
