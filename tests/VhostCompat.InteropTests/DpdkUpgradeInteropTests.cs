using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using VhostCompat.Compat;
using VhostCompat.InteropTests.Harness;
using VhostCompat.Virtio;
using Xunit.Abstractions;
using static VhostCompat.InteropTests.Harness.CompatFeatures;

namespace VhostCompat.InteropTests;

/// <summary>
/// The seed's scenario with real DPDK and no code of ours in the data path: a QEMU 7.2 guest pings through DPDK
/// 22.11's vhost PMD (testpmd icmpecho, the vhost-user server; QEMU the client with reconnect=1); testpmd 22.11 is
/// killed with SIGKILL and DPDK 24.11's testpmd (Debian 13 chroot) is started on the same socket. QEMU reconnects
/// and re-sends what the guest acked: the pings resume when 24.11 offers every acked bit, and QEMU refuses the new
/// backend ("vhost lacks feature mask ... for backend") when it does not. <c>vhost-compat probe</c> of both testpmds
/// and <c>vhost-compat check</c> of the guest's acked state on 22.11 (as an acked-state record) against 24.11's
/// capability document must say the same as QEMU did.
/// </summary>
[Collection(QemuCollection.Name)]
[Trait("Category", "Interop")]
public sealed partial class DpdkUpgradeInteropTests(ITestOutputHelper output)
{
    private static readonly TimeSpan GuestStatusTimeout = TimeSpan.FromSeconds(
        int.TryParse(Environment.GetEnvironmentVariable("VHOSTCOMPAT_INTEROP_BOOT_TIMEOUT"), CultureInfo.InvariantCulture, out var s) ? s : 180);

    /// <summary>How long after 24.11 started the pings must resume, or QEMU's refusal must appear (twice).</summary>
    private static readonly TimeSpan OutcomeTimeout = TimeSpan.FromSeconds(60);

    /// <summary>Ping replies through 24.11 that count as "resumed" (one could be a fluke).</summary>
    private const int RepliesToResume = 3;

    /// <summary>
    /// QEMU 7.2 hw/net/vhost_net.c vhost_net_init(), on every (re)connect of a vhost-user netdev: the features the guest
    /// acked must all be in the backend's GET_FEATURES, else <c>fprintf(stderr, "vhost lacks feature mask 0x%" PRIx64
    /// " for backend\n", ~dev.features &amp; acked)</c>; net/vhost-user.c then reports the queue and drops the connection.
    /// </summary>
    private static readonly Regex LacksFeatureMask = new(@"vhost lacks feature mask 0x(?<mask>[0-9a-fA-F]+) for backend", RegexOptions.CultureInvariant);

    private static readonly Regex FailedInit = new(@"failed to init vhost_net for queue 0", RegexOptions.CultureInvariant);

    /// <summary>
    /// QEMU 7.2's slave_read() (hw/virtio/vhost-user.c) when the killed backend's end of the backend-request channel
    /// closes: DPDK offers backend_req (SET_SLAVE_REQ_FD), the SDK samples do not, so this is not in
    /// <see cref="QemuGuestBase.ExpectedDisconnectNoise"/>.
    /// </summary>
    private static readonly Regex BackendChannelEof = new(@"Unexpected end-of-file before all data were read", RegexOptions.CultureInvariant);

    /// <summary>busybox ping's reply line with its round-trip time: a request queued while no backend ran is answered late.</summary>
    private static readonly Regex ReplyRtt = new(@"bytes from [0-9.]+: seq=(?<seq>\d+) ttl=\d+ time=(?<ms>[0-9.]+) ms", RegexOptions.CultureInvariant);

    /// <summary>Bits QEMU sends along with the guest's: protocol_features 30 (vhost-user only); log_all 26 only while migrating.</summary>
    private static readonly ulong VhostOnly = Bits(VirtioNetFeatures.VhostFLogAll, VirtioNetFeatures.VhostUserFProtocolFeatures);

    /// <summary>host_tso4 11, host_tso6 12: what the vhost PMD's tso=1 adds to its offer (the default is tso=0).</summary>
    private static readonly ulong HostTso = Bits(11, 12);

    private readonly Stopwatch _clock = Stopwatch.StartNew();

    /// <summary>The run directory's test.log: the measured timings and tool outputs stay with the run's other files.</summary>
    private string? _runLog;

    [SkippableFact]
    public Task DpdkUpgrade_22_11_to_24_11_under_a_pinging_guest_resumes_as_check_predicts() =>
        UpgradeAsync(nameof(DpdkUpgrade_22_11_to_24_11_under_a_pinging_guest_resumes_as_check_predicts), devargs2211: string.Empty, devargs2411: string.Empty, expectResume: true);

    /// <summary>22.11 with tso=1 offers host_tso4/6 and the guest acks them; 24.11 with its default tso=0 does not offer them.</summary>
    [SkippableFact]
    public Task DpdkUpgrade_22_11_tso_on_to_24_11_tso_off_is_refused_by_QEMU_as_check_predicts() =>
        UpgradeAsync(nameof(DpdkUpgrade_22_11_tso_on_to_24_11_tso_off_is_refused_by_QEMU_as_check_predicts), devargs2211: "tso=1", devargs2411: string.Empty, expectResume: false);

    private async Task UpgradeAsync(string runName, string devargs2211, string devargs2411, bool expectResume)
    {
        var tools = InteropPrerequisites.RequireQemuGuest(QemuPeer.Qemu72);
        var (old, oldVersion) = RequireDpdk(DpdkPeer.Dpdk2211);
        var (neu, newVersion) = RequireDpdk(DpdkPeer.Dpdk2411);
        var run = InteropRun.Create(runName);
        _runLog = run.PathFor("test.log");
        var socket = run.PathFor("vnet.sock");
        var problems = new List<string>();
        Log($"run directory: {run.Directory}; QEMU {tools.QemuVersion} ({tools.Qemu}); DPDK {oldVersion} ({old}) -> DPDK {newVersion} ({neu})");

        // 1. DPDK 22.11 serves the socket; probe it before any guest is there.
        await using var first = await DpdkVhostBackend.StartAsync(run, old, socket, timeout: TimeSpan.FromMinutes(5), devargs: devargs2211, name: "dpdk-22.11");
        Log($"testpmd {oldVersion} pid {first.Process.Pid}: {first.Process.CommandLine}");
        var probeOld = await CompatPreflightRun.ProbeAsync(run, socket, "22.11");
        Log($"vhost-compat probe of DPDK {oldVersion} (vhost PMD devargs '{devargs2211}'):\n{probeOld.Text.TrimEnd()}");

        // 2. The guest: loop mode, busybox ping of 10.0.0.1 (testpmd icmpecho answers ARP and echo) once a second.
        var options = new QemuGuestOptions { SocketPath = socket, ReconnectSeconds = 1, Timeout = TimeSpan.FromMinutes(5) };
        options.GuestParameters["mode"] = "loop";
        options.GuestParameters["pingloop"] = "1";
        options.GuestParameters["ip"] = "10.0.0.2/24";
        options.GuestParameters["peer"] = "10.0.0.1";
        await using var guest = await QemuGuest.StartAsync(run, tools, options);
        Log($"qemu pid {guest.Process.Pid}: {guest.Process.CommandLine}");
        var status = await guest.WaitForNetStatusAsync(GuestStatusTimeout);
        if (status is null)
        {
            Assert.Fail($"the guest never printed its virtio-net status line ({guest.Observed()}){run.Diagnostics()}");
        }

        var flowing = await MatrixGuest.WaitForRepliesAsync(guest, after: -1, count: 3, TimeSpan.FromSeconds(90));
        if (flowing.Count < 3)
        {
            Assert.Fail($"no ping replies through DPDK {oldVersion} (seq {string.Join(',', flowing)}; {guest.Observed()}){run.Diagnostics()}");
        }

        Log($"status 0x{status.Status:x2} after {status.SeenAfter.TotalSeconds:F1} s; guest acked {Names(status.Features)}; ping replies flow (seq {string.Join(',', flowing)})");

        // 3. What the guest negotiated, as DPDK 22.11 logged it, becomes the VM's acked-state record.
        var acked = first.Negotiated(DpdkVhostBackend.NegotiatedVirtio) is { Count: > 0 } a ? a[^1] : 0;
        var ackedProtocol = first.Negotiated(DpdkVhostBackend.NegotiatedProtocol) is { Count: > 0 } p ? p[^1] : 0;
        var expectedAcked = (status.Features & Qemu72VhostUserNetBits) | Bit(VirtioNetFeatures.VhostUserFProtocolFeatures);
        Log($"DPDK {oldVersion} negotiated: SET_FEATURES {Names(acked)}, protocol {VirtioNetFeatures.Hex(ackedProtocol)}");
        if (acked != expectedAcked)
        {
            problems.Add($"DPDK {oldVersion} logged SET_FEATURES {Names(acked)}; the guest's acked bits within QEMU's vhost-user set + protocol_features are {Names(expectedAcked)}");
        }

        if (devargs2211.Contains("tso=1", StringComparison.Ordinal) && (acked & HostTso) != HostTso)
        {
            Assert.Fail($"with tso=1 on DPDK {oldVersion} the guest did not ack host_tso4/host_tso6 ({Names(acked)}): this case would test nothing{run.Diagnostics()}");
        }

        var record = new AckedStateRecord("vm-dpdk-upgrade.net0", VirtioDeviceType.Net, acked, ackedProtocol, profile: null, queueCount: 2,
            queueSizes: new Dictionary<int, int> { [0] = 256, [1] = 256 }, // virtio-net-pci's rx/tx_queue_size defaults (not set here)
            config: [], generation: 1, savedAt: DateTimeOffset.UtcNow);
        var recordPath = run.PathFor("record-22.11.json");
        await File.WriteAllTextAsync(recordPath, record.ToJson());

        // 4. SIGKILL to testpmd 22.11 itself (not its timeout wrapper): no clean shutdown, the socket file stays.
        var lastBeforeKill = MatrixGuest.Replies(guest.ConsolePath).Max();
        var victim = first.Process.ProgramPid();
        if (Kill(victim, 9) != 0)
        {
            Assert.Fail($"kill -9 {victim} failed: errno {Marshal.GetLastPInvokeError()}{run.Diagnostics()}");
        }

        var sinceKill = Stopwatch.StartNew();
        if (!await first.Process.WaitForExitAsync(TimeSpan.FromSeconds(10)))
        {
            Assert.Fail($"testpmd {oldVersion} (pid {victim}) still running 10 s after SIGKILL{run.Diagnostics()}");
        }

        Log($"kill -9 {victim}: testpmd {oldVersion} gone (wrapper exit {first.Process.ExitCode?.ToString(CultureInfo.InvariantCulture) ?? "?"}); last reply seq {lastBeforeKill}");

        // 5. DPDK 24.11 on the same socket path.
        var sinceStart = Stopwatch.StartNew();
        await using var second = await DpdkVhostBackend.StartAsync(run, neu, socket, timeout: TimeSpan.FromMinutes(4), devargs: devargs2411, name: "dpdk-24.11");
        var listening = sinceStart.Elapsed;
        var baseline = MatrixGuest.Replies(guest.ConsolePath).Max();
        Log($"testpmd {newVersion} pid {second.Process.Pid} listening {listening.TotalSeconds:F2} s after its start ({sinceKill.Elapsed.TotalSeconds:F2} s after the kill): {second.Process.CommandLine}");
        if (baseline > lastBeforeKill + 1)
        {
            problems.Add($"ping replies arrived while no backend ran (seq {lastBeforeKill} at the kill, {baseline} when 24.11 listened)");
        }

        // 6. The outcome: replies through 24.11, or QEMU refusing it on every reconnect.
        var outcome = await WaitForOutcomeAsync(guest, second, baseline, sinceStart, sinceKill);
        Log(outcome.Describe(lastBeforeKill));
        var rtts = LogFile.ReadLines(guest.ConsolePath).Select(l => ReplyRtt.Match(l))
            .Where(m => m.Success && int.Parse(m.Groups["seq"].Value, CultureInfo.InvariantCulture) > lastBeforeKill).Take(RepliesToResume)
            .Select(m => $"seq={m.Groups["seq"].Value} {m.Groups["ms"].Value} ms");
        Log($"ping round trips after the kill: [{string.Join(", ", rtts)}]");
        var resumed = outcome.Replies.Count >= RepliesToResume;

        // 7. probe 24.11 (live, next to QEMU's session or reconnect attempts) and check the 22.11 record against it.
        var probeNew = await CompatPreflightRun.ProbeAsync(run, socket, "24.11");
        Log($"vhost-compat probe of DPDK {newVersion} (vhost PMD devargs '{devargs2411}'):\n{probeNew.Text.TrimEnd()}");
        var offerOld = probeOld.Capabilities.VirtioFeatures;
        var offerNew = probeNew.Capabilities.VirtioFeatures;
        Log($"GET_FEATURES {oldVersion} {VirtioNetFeatures.Hex(offerOld)} -> {newVersion} {VirtioNetFeatures.Hex(offerNew)}: " +
            $"dropped {Names(offerOld & ~offerNew)}, added {Names(offerNew & ~offerOld)}; protocol {VirtioNetFeatures.Hex(probeOld.Capabilities.ProtocolFeatures)} -> {VirtioNetFeatures.Hex(probeNew.Capabilities.ProtocolFeatures)}");
        var verdict = await CompatPreflightRun.CheckAsync(run, recordPath, probeNew.CapsPath, "22.11-to-24.11");
        Log($"vhost-compat check --record record-22.11.json --caps caps-24.11.json (exit {verdict.ExitCode}):\n{verdict.Text.TrimEnd()}");

        // 8. Does what the tools said agree with what QEMU did?
        if (resumed != expectResume)
        {
            problems.Add(expectResume
                ? $"the pings did not resume through DPDK {newVersion} within {OutcomeTimeout.TotalSeconds:F0} s: {outcome.Describe(lastBeforeKill)}"
                : $"QEMU was expected to refuse DPDK {newVersion} (it lacks {Names(acked & ~offerNew & ~VhostOnly)}), but the pings resumed");
        }

        if (verdict.Compatible != resumed)
        {
            problems.Add($"vhost-compat check says {(verdict.Compatible ? "compatible" : "incompatible")} but the pings {(resumed ? "resumed" : "did not resume")}:\n{verdict.Text}");
        }

        var missing = acked & ~VhostOnly & ~offerNew;
        if (resumed)
        {
            CheckResumed(outcome, acked, second, verdict, problems);
        }
        else
        {
            CheckRefused(outcome, missing, second, verdict, problems);
            // Still nothing through 24.11 after the probe and the check (seconds and several reconnect attempts later).
            var late = MatrixGuest.Replies(guest.ConsolePath).Where(seq => seq > baseline).ToList();
            if (late.Count > 0)
            {
                problems.Add($"ping replies through the refused DPDK {newVersion}: seq [{string.Join(',', late)}]");
            }
        }

        if (guest.Process.HasExited)
        {
            problems.Add($"QEMU exited with {guest.Process.ExitCode} during the test");
        }

        Regex[] expectedNoise = resumed ? [BackendChannelEof] : [BackendChannelEof, LacksFeatureMask, FailedInit];
        var unexpected = guest.StderrErrorLinesBeyondDisconnect().Where(l => !expectedNoise.Any(r => r.IsMatch(l))).ToList();
        if (unexpected.Count > 0)
        {
            problems.Add("QEMU stderr has unexpected error lines:\n" + string.Join('\n', unexpected));
        }

        Log("QEMU stderr (line counts):\n" + string.Join('\n', LogFile.ReadLines(guest.StderrPath).GroupBy(l => l).Select(g => $"{g.Count(),4} x {g.Key}")));
        Log($"vhost-user requests seen by DPDK {oldVersion}: {SampleNetBackend.Collapse(first.Requests())}");
        Log($"vhost-user requests seen by DPDK {newVersion}: {SampleNetBackend.Collapse(second.Requests())}");
        Log($"done after {_clock.Elapsed.TotalSeconds:F1} s");
        if (problems.Count > 0)
        {
            Assert.Fail(string.Join("\n", problems.Select(x => "* " + x)) + run.Diagnostics());
        }
    }

    /// <summary>QEMU re-sent the same features to 24.11; check found nothing to object to.</summary>
    private static void CheckResumed(UpgradeOutcome outcome, ulong acked, DpdkVhostBackend second, CheckVerdict verdict, List<string> problems)
    {
        var renegotiated = second.Negotiated(DpdkVhostBackend.NegotiatedVirtio);
        if (renegotiated.Count == 0 || renegotiated.Any(f => f != acked))
        {
            problems.Add($"QEMU's SET_FEATURES to 24.11 [{string.Join(", ", renegotiated.Select(VirtioNetFeatures.Hex))}] differ from the guest's acked {VirtioNetFeatures.Hex(acked)} on 22.11");
        }

        if (outcome.Refusals.Count > 0)
        {
            problems.Add($"QEMU refused 24.11 although the pings resumed: {outcome.Refusals[0]}");
        }

        if (verdict.Errors.Any())
        {
            problems.Add("vhost-compat check reported errors for a compatible upgrade:\n" + verdict.Text);
        }
    }

    /// <summary>QEMU's mask is exactly the acked bits 24.11 does not offer, and check named them.</summary>
    private static void CheckRefused(UpgradeOutcome outcome, ulong missing, DpdkVhostBackend second, CheckVerdict verdict, List<string> problems)
    {
        if (outcome.Refusals.Count < 2)
        {
            problems.Add($"QEMU printed {outcome.Refusals.Count} 'vhost lacks feature mask' line(s) within {OutcomeTimeout.TotalSeconds:F0} s; expected one per reconnect attempt (at least 2)");
            return;
        }

        var masks = outcome.Refusals.Select(m => VirtioNetFeatures.ParseHex(m.Groups["mask"].Value)).Distinct().ToList();
        if (masks.Count != 1 || masks[0] != missing)
        {
            problems.Add($"QEMU's missing mask(s) [{string.Join(", ", masks.Select(VirtioNetFeatures.Hex))}] differ from the acked bits 24.11 does not offer, {Names(missing)}");
        }

        if (outcome.FailedInits == 0)
        {
            problems.Add("QEMU did not report 'failed to init vhost_net for queue 0' after the feature mask line");
        }

        var renegotiated = second.Negotiated(DpdkVhostBackend.NegotiatedVirtio);
        if (renegotiated.Count > 0)
        {
            problems.Add($"24.11 got SET_FEATURES [{string.Join(", ", renegotiated.Select(VirtioNetFeatures.Hex))}] although QEMU refused it");
        }

        var expectedNames = VirtioFeatures.Names(VirtioDeviceType.Net, missing);
        var unsupported = verdict.Errors.Where(f => f.Code == "features-unsupported").ToList();
        if (unsupported.Count != 1 || !unsupported[0].Features.SequenceEqual(expectedNames))
        {
            problems.Add($"vhost-compat check should name exactly [{string.Join(", ", expectedNames)}] in one features-unsupported error:\n{verdict.Text}");
        }

        var others = verdict.Errors.Where(f => f.Code != "features-unsupported").ToList();
        if (others.Count > 0)
        {
            problems.Add($"vhost-compat check reported other errors than the missing features: {string.Join("; ", others)}");
        }
    }

    /// <summary>Polls (100 ms) the guest's console, QEMU's stderr and 24.11's log until the pings resumed or QEMU refused twice.</summary>
    private static async Task<UpgradeOutcome> WaitForOutcomeAsync(QemuGuest guest, DpdkVhostBackend second, int baseline, Stopwatch sinceStart, Stopwatch sinceKill)
    {
        TimeSpan? negotiatedAt = null, firstReplyAt = null, firstReplySinceKill = null, firstRefusalAt = null;
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            var replies = MatrixGuest.Replies(guest.ConsolePath).Where(seq => seq > baseline).ToList();
            var stderr = LogFile.ReadLines(guest.StderrPath);
            var refusals = stderr.Select(l => LacksFeatureMask.Match(l)).Where(m => m.Success).ToList();
            negotiatedAt ??= second.Negotiated(DpdkVhostBackend.NegotiatedVirtio).Count > 0 ? sinceStart.Elapsed : null;
            if (replies.Count > 0 && firstReplyAt is null)
            {
                firstReplyAt = sinceStart.Elapsed;
                firstReplySinceKill = sinceKill.Elapsed;
            }

            firstRefusalAt ??= refusals.Count > 0 ? sinceStart.Elapsed : null;
            var done = replies.Count >= RepliesToResume || refusals.Count >= 2 || guest.Process.HasExited || second.Process.HasExited || deadline.Elapsed >= OutcomeTimeout;
            if (done)
            {
                return new UpgradeOutcome(replies, refusals, stderr.Count(l => FailedInit.IsMatch(l)), negotiatedAt, firstReplyAt, firstReplySinceKill, firstRefusalAt);
            }

            await Task.Delay(100);
        }
    }

    private sealed record UpgradeOutcome(
        IReadOnlyList<int> Replies, IReadOnlyList<Match> Refusals, int FailedInits,
        TimeSpan? NegotiatedAt, TimeSpan? FirstReplyAt, TimeSpan? FirstReplySinceKill, TimeSpan? FirstRefusalAt)
    {
        public string Describe(int lastSeqBeforeKill) =>
            $"OUTCOME: 24.11 start -> QEMU's SET_FEATURES {Secs(NegotiatedAt)}; -> first ping reply {Secs(FirstReplyAt)} " +
            $"(kill -> reply {Secs(FirstReplySinceKill)}; seq {lastSeqBeforeKill} before the kill, then [{string.Join(',', Replies)}]" +
            (Replies.Count > 0 ? $", {Replies[0] - lastSeqBeforeKill - 1} echo requests unanswered" : string.Empty) + "); " +
            $"refusals {Refusals.Count} (first {Secs(FirstRefusalAt)}{(Refusals.Count > 0 ? ": '" + Refusals[0].Value + "'" : string.Empty)}), 'failed to init vhost_net' x{FailedInits}";

        private static string Secs(TimeSpan? t) => t is { } v ? v.TotalSeconds.ToString("F2", CultureInfo.InvariantCulture) + " s" : "never";
    }

    private static (string Testpmd, string Version) RequireDpdk(DpdkPeer peer)
    {
        var (version, problem) = PeerCheck.DpdkVersionOf(peer);
        PeerCheck.SkipOrFail(problem);
        return (peer.Testpmd!, version!);
    }

    private static ulong Bit(int n) => 1UL << n;

    private void Log(string line)
    {
        var stamped = $"[{_clock.Elapsed.TotalSeconds,6:F1} s] {line}";
        output.WriteLine(stamped);
        if (_runLog is not null)
        {
            File.AppendAllText(_runLog, stamped + "\n");
        }
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);
}
