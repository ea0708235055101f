using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;
using VhostCompat.InteropTests.Harness;
using Xunit.Abstractions;

namespace VhostCompat.InteropTests;

/// <summary>
/// Crash recovery of samples/Block under a real, unmodified QEMU 7.2 vhost-user-blk-pci (chardev <c>reconnect=1</c>): the
/// guest rewrites a region of the disk pass after pass with O_DIRECT native AIO (two writers, one per queue, 16 requests in
/// flight each; every block is read and checked against the previous pass before it is rewritten); the backend is killed
/// with SIGKILL while it is completing requests, restarted on the same socket, image and state directory; QEMU reconnects;
/// the guest's I/O must all complete without an error, and every block must hold what was last written to it — at each
/// read-before-write, in the guest's final read-back and in the image on the host after QEMU quit. A request lost across
/// the crash shows up as a stalled writer; a write acknowledged but not done, as a block holding an older pass.
/// </summary>
[Collection(QemuCollection.Name)]
[Trait("Category", "Interop")]
public sealed partial class BlockCrashRecoveryInteropTests(ITestOutputHelper output)
{
    private const long DiskSize = 64L << 20;
    private const int Queues = 2;
    private const long RegionStart = 8L << 20;
    private const long RegionBytes = 8L << 20;          // two writers, 1024 blocks of 4 KiB each
    private const long ControlOffset = 1L << 20;        // the host writes "VHOSTCOMPAT-STOP" here to end the workload
    private const int QueueDepth = 16;
    private const int ProgressMs = 100;

    /// <summary>
    /// Emulated storage latency of the Block sample (--io-latency-ms): each guest request spends that long inside the
    /// backend, as on real storage, so requests complete out of order. The kill itself does not rely on it: the test
    /// stalls the sample's I/O (SIGUSR1) and kills once requests are held in flight on every queue.
    /// </summary>
    private const int IoLatencyMs = 5;

    /// <summary>Boot to the first passes takes ~15-30 s under TCG; the machine is shared, so allow much more.</summary>
    private static readonly TimeSpan GuestTimeout = TimeSpan.FromSeconds(
        int.TryParse(Environment.GetEnvironmentVariable("VHOSTCOMPAT_INTEROP_BOOT_TIMEOUT"), CultureInfo.InvariantCulture, out var s) ? s : 180);

    /// <summary>How long after the restart both writers must have completed two more passes.</summary>
    private static readonly TimeSpan ResumeTimeout = TimeSpan.FromSeconds(60);

    /// <summary>How long the restarted backend's session must stay up (no reconnect loop) while the guest keeps writing.</summary>
    private static readonly TimeSpan StableWindow = TimeSpan.FromSeconds(8);

    /// <summary>How long the stalled backend may take to report held writes on every queue (the guest submits within ms).</summary>
    private static readonly TimeSpan HoldTimeout = TimeSpan.FromSeconds(30);

    private const int SigUsr1 = 10;

    /// <summary>How long the backend stays dead (QEMU retries against a socket nobody listens on).</summary>
    private static readonly TimeSpan DownWindow = TimeSpan.FromSeconds(3);

    private static readonly Regex PassLine = new(
        @"VHOSTCOMPAT: blk pass writer=(?<w>\d) pass=(?<pass>\d+) writes=(?<writes>\d+) io_errors=(?<err>\d+)", RegexOptions.CultureInvariant);

    private static readonly Regex FinalLine = new(
        @"VHOSTCOMPAT: blk final writer=(?<w>\d) pass=(?<pass>\d+) first=(?<first>\d+) blocks=(?<blocks>\d+) writes=(?<writes>\d+) reads=(?<reads>\d+) io_errors=(?<err>\d+) verify_bad=(?<vbad>\d+) mismatches=(?<bad>\d+)",
        RegexOptions.CultureInvariant);

    private static readonly Regex WaitingLine = new(
        @"VHOSTCOMPAT: blk waiting writer=(?<w>\d) pass=(?<pass>\d+) inflight=(?<inflight>\d+) writes=(?<writes>\d+) reads=(?<reads>\d+) waited_s=(?<waited>\d+)", RegexOptions.CultureInvariant);

    /// <summary>Guest kernel lines that mean the I/O path went wrong (errors, a bad used-ring entry, a stuck queue).</summary>
    private static readonly Regex KernelTrouble = new(
        @"I/O error|blk_update_request|Buffer I/O|critical (medium|target|nexus) error|not a head|broken|timed out|timeout|reset|hung", RegexOptions.CultureInvariant | RegexOptions.IgnoreCase);

    private static readonly Regex StressDoneLine = new(@"VHOSTCOMPAT: blk stress done io_errors=(?<err>\d+) verify_bad=(?<vbad>\d+) writes=(?<writes>\d+) reads=(?<reads>\d+) stop=(?<stop>\w+)", RegexOptions.CultureInvariant);
    private static readonly Regex DmesgErrorsLine = new(@"VHOSTCOMPAT: dmesg_io_errors=(?<n>\d+)", RegexOptions.CultureInvariant);
    private static readonly Regex StressExitLine = new(@"VHOSTCOMPAT: blk stress_exit=(?<code>\d+)", RegexOptions.CultureInvariant);
    private static readonly Regex LogTimestamp = new(@"^(?<t>\d\d:\d\d:\d\d\.\d\d\d) ", RegexOptions.CultureInvariant);

    private readonly Stopwatch _clock = Stopwatch.StartNew();

    [SkippableTheory]
    [InlineData(false)]
    [InlineData(true)]
    public Task Block_backend_killed_with_SIGKILL_under_guest_writes_restarts_and_no_write_is_lost(bool packedRing) =>
        KilledUnderWritesAsync(InteropPrerequisites.RequireQemuGuest(), packedRing, nameof(Block_backend_killed_with_SIGKILL_under_guest_writes_restarts_and_no_write_is_lost));

    /// <summary>The test body with the given QEMU build (also run with QEMU 10.0 by <see cref="Qemu10InteropTests"/>).</summary>
    internal async Task KilledUnderWritesAsync(InteropTools tools, bool packedRing, string testName)
    {
        BlockGuest.RequireCompiler();
        var run = InteropRun.Create(testName + (packedRing ? " packed" : " split"));
        Log($"run directory: {run.Directory}");
        await BlockGuest.GetInitramfsAsync(tools);
        Log("initramfs ready");

        var tag = Guid.NewGuid().ToString("N")[..10];
        var serial = "vcblk-" + tag[..8];
        var socket = run.PathFor("blk.sock");
        var image = run.PathFor("disk.img");
        var stateDir = run.PathFor("state");
        var problems = new List<string>();
        var blocksPerWriter = RegionBytes / BlockPattern.BlockSize / 2;

        var first = await BlockSampleBackend.StartAsync(
            run, socket, image, DiskSize, Queues, serial, name: "backend-first", timeout: TimeSpan.FromMinutes(10), stateDirectory: stateDir, progressMs: ProgressMs, ioLatencyMs: IoLatencyMs);
        BlockSampleBackend? second = null;
        long heldAtKill = 0;
        try
        {
            Log($"backend pid {first.Process.Pid}: {first.Process.CommandLine}");
            var options = new BlockGuestOptions
            {
                PackedRing = packedRing,
                SocketPath = socket,
                Mode = "stress",
                Tag = tag,
                NumQueues = Queues,
                ReconnectSeconds = 1,
                Timeout = TimeSpan.FromMinutes(9),
            };
            options.GuestParameters["start"] = RegionStart.ToString(CultureInfo.InvariantCulture);
            options.GuestParameters["bytes"] = RegionBytes.ToString(CultureInfo.InvariantCulture);
            options.GuestParameters["qd"] = QueueDepth.ToString(CultureInfo.InvariantCulture);
            options.GuestParameters["ctrl"] = ControlOffset.ToString(CultureInfo.InvariantCulture);
            options.GuestParameters["maxsec"] = "420";

            await using var guest = await BlockGuest.StartAsync(run, tools, options, "qemu-stress");
            Log($"qemu pid {guest.Process.Pid}: {guest.Process.CommandLine}");

            // Both writers (one per CPU, so one per queue) have completed 3 passes: the workload is in full swing.
            if (!await WaitForPassesAsync(guest, [3, 3], GuestTimeout))
            {
                var init = await guest.WaitForConsoleAsync(BlockGuest.InitLine, TimeSpan.Zero) is null ? " (the guest never reached /init)" : string.Empty;
                Assert.Fail($"the guest's writers did not complete 3 passes each within {GuestTimeout.TotalSeconds:F0} s{init}; " +
                            $"QEMU running: {!guest.Process.HasExited}, backend running: {!first.Process.HasExited}; guest: {string.Join(" | ", guest.GuestLines().TakeLast(8))}{run.Diagnostics()}");
            }

            CheckDevice(guest.Device(), serial, problems);
            Log($"guest writing: passes {string.Join(",", LastPasses(guest))}; {guest.GuestLines().FirstOrDefault(l => l.Contains("blk stress start", StringComparison.Ordinal))}");

            // Crash with requests in flight, decided by events rather than timing: SIGUSR1 makes the sample hold every
            // read and write it takes from the rings before its I/O (an emulated storage stall; the guest keeps
            // submitting until its queue depth is reached). Once the sample has logged held writes on every queue,
            // SIGKILL the program itself (ExternalProcess's PID is its 'timeout' wrapper): those requests were taken
            // from the rings and never completed, exactly what inflight tracking must hand out again.
            var victim = first.Process.ProgramPid();
            if (Kill(victim, SigUsr1) != 0)
            {
                Assert.Fail($"kill -USR1 {victim} failed: errno {Marshal.GetLastPInvokeError()}{run.Diagnostics()}");
            }

            var held = new (long Reads, long Writes)[Queues];
            var lookFor = Stopwatch.StartNew();
            bool AllQueuesHoldWrites() => held.All(h => h.Writes > 0);
            while (!AllQueuesHoldWrites() && lookFor.Elapsed < HoldTimeout && !first.Process.HasExited)
            {
                foreach (Match m in CompatSampleLog.Matches(first.LogPath, BlockSampleBackend.HeldLine))
                {
                    var q = (int)Num(m, "queue");
                    if (q < Queues)
                    {
                        // Lines from concurrent completions may be logged out of order; the counts only grow while held.
                        held[q] = (Math.Max(held[q].Reads, Num(m, "reads")), Math.Max(held[q].Writes, Num(m, "writes")));
                    }
                }

                if (!AllQueuesHoldWrites())
                {
                    await Task.Delay(10);
                }
            }

            var heldText = string.Join(", ", held.Select((h, q) => $"queue {q}: {h.Reads} reads, {h.Writes} writes"));
            if (!AllQueuesHoldWrites())
            {
                Assert.Fail($"after SIGUSR1 the backend did not report held writes on every queue within {HoldTimeout.TotalSeconds:F0} s " +
                            $"(held: {heldText}; backend running: {!first.Process.HasExited}; guest passes {string.Join(",", LastPasses(guest))}){run.Diagnostics()}");
            }

            heldAtKill = held.Sum(h => h.Reads + h.Writes);
            var passesAtKill = LastPasses(guest);
            if (Kill(victim, 9) != 0)
            {
                Assert.Fail($"kill -9 {victim} failed: errno {Marshal.GetLastPInvokeError()}{run.Diagnostics()}");
            }

            var killedAt = _clock.Elapsed;
            Log($"kill -9 {victim} (wrapper pid {first.Process.Pid}) with requests held in flight ({heldText}); guest passes at the kill {string.Join(",", passesAtKill)}");
            if (!await first.Process.WaitForExitAsync(TimeSpan.FromSeconds(10)))
            {
                Assert.Fail($"backend pid {victim} still running 10 s after SIGKILL{run.Diagnostics()}");
            }

            Log($"backend killed (exit {first.Process.ExitCode?.ToString(CultureInfo.InvariantCulture) ?? "?"}); its queue lines: " +
                string.Join("; ", CompatSampleLog.Matches(first.LogPath, BlockSampleBackend.QueueLine).Select(m => m.Value)));

            // Down: no pass can complete without a backend (the first second may still flush a line through the serial port).
            await Task.Delay(TimeSpan.FromSeconds(1));
            var passesDown = LastPasses(guest);
            await Task.Delay(DownWindow - TimeSpan.FromSeconds(1));
            var passesBeforeRestart = LastPasses(guest);
            Log($"guest while the backend is down: passes {string.Join(",", passesDown)} -> {string.Join(",", passesBeforeRestart)}");
            if (!passesDown.SequenceEqual(passesBeforeRestart))
            {
                problems.Add($"the guest completed passes while the backend was dead ({string.Join(",", passesDown)} -> {string.Join(",", passesBeforeRestart)}): was it really killed?");
            }

            // Restart on the same socket (the stale file is left for the backend to replace), image and state directory.
            var restartSpawnedAt = _clock.Elapsed;
            var restartClock = Stopwatch.StartNew();
            second = await BlockSampleBackend.StartAsync(
                run, socket, image, null, Queues, serial, name: "backend-restarted", timeout: TimeSpan.FromMinutes(10),
                stateDirectory: stateDir, progressMs: ProgressMs, keepStaleSocket: true, ioLatencyMs: IoLatencyMs);
            Log($"restarted backend pid {second.Process.Pid} listening after {restartClock.Elapsed.TotalSeconds:F2} s ({(_clock.Elapsed - killedAt).TotalSeconds:F1} s after the kill)");

            TimeSpan? firstRequestSeen = null, resumedAfter = null;
            while (restartClock.Elapsed < ResumeTimeout && (firstRequestSeen is null || resumedAfter is null) && !second.Process.HasExited && !guest.Process.HasExited)
            {
                if (firstRequestSeen is null && CompatSampleLog.Matches(second.LogPath, BlockSampleBackend.FirstRequestLine).Count > 0)
                {
                    firstRequestSeen = restartClock.Elapsed;
                }

                var now = LastPasses(guest);
                if (resumedAfter is null && now[0] >= passesBeforeRestart[0] + 2 && now[1] >= passesBeforeRestart[1] + 2)
                {
                    resumedAfter = restartClock.Elapsed;
                }

                await Task.Delay(20);
            }

            var passesResumed = LastPasses(guest);

            // The guest's side of "writes were in flight": while the backend was dead each writer sat on outstanding writes
            // ("waiting" lines, printed after 2 s without a completion), and those same writes completed after the restart.
            var waiting = CompatSampleLog.Matches(guest.ConsolePath, WaitingLine);
            Log("guest writers during the outage: " + (waiting.Count == 0 ? "(no waiting lines)" : string.Join("; ", waiting.Select(m => m.Value["VHOSTCOMPAT: blk ".Length..]))));
            for (var w = 0; w < 2; w++)
            {
                if (!waiting.Any(m => Num(m, "w") == w && Num(m, "writes") > 0))
                {
                    problems.Add($"writer {w} reported no outstanding writes while the backend was dead: the kill did not catch it with writes in flight");
                }
            }

            var milestones = Milestones(second.LogPath);
            Log("RESTART-TO-SERVING (block): from the restarted process's start: " + string.Join(", ", milestones.Select(m => $"{m.Key} {m.Value}")) +
                $"; test clock (spawn -> 'First request' line seen, 20 ms polling): {Secs(firstRequestSeen)}; " +
                $"both guest writers +2 passes: {Secs(resumedAfter)} after the spawn, {(resumedAfter is { } r ? Secs(restartSpawnedAt - killedAt + r) : "n/a")} after the kill");
            Log("restarted backend: " + string.Join("; ", LogFile.ReadLines(second.LogPath)
                .Where(l => l.Contains("Queue ", StringComparison.Ordinal) || l.Contains("record", StringComparison.Ordinal) || l.Contains("stale", StringComparison.Ordinal) || l.Contains("Frontend", StringComparison.Ordinal))
                .Take(20)));

            if (second.Process.HasExited)
            {
                problems.Add($"the restarted backend exited with {second.Process.ExitCode}");
            }

            if (firstRequestSeen is null)
            {
                problems.Add($"the restarted backend completed no request within {ResumeTimeout.TotalSeconds:F0} s (QEMU reconnect=1 did not bring the rings back?)");
            }

            if (resumedAfter is null)
            {
                problems.Add($"the guest's writers did not complete two more passes each within {ResumeTimeout.TotalSeconds:F0} s of the restart " +
                             $"(passes {string.Join(",", passesBeforeRestart)} -> {string.Join(",", passesResumed)}); guest: {string.Join(" | ", guest.GuestLines().TakeLast(6))}");
            }
            else
            {
                // No reconnect loop: one session on the restarted backend, no disconnect, and the guest keeps writing.
                await Task.Delay(StableWindow);
                var connects = CompatSampleLog.Matches(second.LogPath, CompatSampleLog.Connected).Count;
                var disconnects = CompatSampleLog.Matches(second.LogPath, CompatSampleLog.Disconnected);
                var later = LastPasses(guest);
                Log($"{StableWindow.TotalSeconds:F0} s later: {connects} connect(s), {disconnects.Count} disconnect(s) on the restarted backend; guest passes {string.Join(",", passesResumed)} -> {string.Join(",", later)}");
                if (connects != 1 || disconnects.Count != 0)
                {
                    problems.Add($"reconnect loop: the restarted backend saw {connects} connection(s) (1 expected) and {disconnects.Count} disconnection(s) " +
                                 $"({string.Join("; ", disconnects.Select(d => d.Groups["reason"].Value))})");
                }

                if (later[0] <= passesResumed[0] || later[1] <= passesResumed[1])
                {
                    problems.Add($"a writer stopped again after resuming (passes {string.Join(",", passesResumed)} -> {string.Join(",", later)})");
                }
            }

            // Stop the workload: the guest polls the control block, finishes its passes, verifies the region, powers off.
            WriteStop(image);
            Log("wrote VHOSTCOMPAT-STOP into the control block");
            var done = await guest.WaitForConsoleAsync(BlockGuest.DoneLine, TimeSpan.FromSeconds(120));
            if (done is null)
            {
                problems.Add($"the guest never printed 'VHOSTCOMPAT: done' within 120 s of the stop (QEMU running: {!guest.Process.HasExited}); last lines: {string.Join(" | ", guest.GuestLines().TakeLast(8))}");
            }

            if (!await guest.WaitForExitAsync(TimeSpan.FromSeconds(30)))
            {
                problems.Add($"QEMU did not exit within 30 s after the guest powered off ({guest.Observed()})");
            }

            // Everything the guest printed, minus the per-pass lines (counted instead).
            var guestLines = guest.GuestLines();
            Log($"guest: {guestLines.Count(l => PassLine.IsMatch(l))} pass lines, last passes {string.Join(",", LastPasses(guest))}");
            foreach (var l in guestLines.Where(l => !PassLine.IsMatch(l)))
            {
                output.WriteLine("  guest| " + l);
            }

            CheckGuestVerdict(guest, guestLines, problems);
            var finals = guestLines.Select(l => FinalLine.Match(l)).Where(m => m.Success).ToDictionary(m => (int)Num(m, "w"));

            var qemuExit = guest.Process.ExitCode;
            if (qemuExit is not null and not 0)
            {
                problems.Add($"QEMU exited with code {qemuExit} (124 = harness timeout, 128+N = signal N)");
            }

            var stderr = LogFile.ReadLines(guest.Process.StderrPath);
            Log("QEMU stderr (line counts):\n" + string.Join('\n', stderr.GroupBy(l => l).Select(g => $"{g.Count(),4} x {g.Key}")));
            var unexpected = guest.StderrErrorLinesBeyondDisconnect();
            if (unexpected.Count > 0)
            {
                problems.Add("QEMU stderr has unexpected lines:\n" + string.Join('\n', unexpected));
            }

            // QEMU is gone: the image on the host must hold every writer's last pass, and nothing outside the region.
            if (guest.Process.HasExited)
            {
                for (var w = 0; w < 2; w++)
                {
                    if (!finals.TryGetValue(w, out var f))
                    {
                        problems.Add($"the guest printed no 'final' line for writer {w}: the host cannot know which pass to expect");
                        continue;
                    }

                    var firstOff = RegionStart + (w * blocksPerWriter * BlockPattern.BlockSize);
                    if (Num(f, "first") != firstOff || Num(f, "blocks") != blocksPerWriter)
                    {
                        problems.Add($"writer {w}'s final line '{f.Value}' does not describe the region the test asked for (first {firstOff}, {blocksPerWriter} blocks)");
                    }

                    var pass = (int)Num(f, "pass");
                    if (Num(f, "writes") != pass * blocksPerWriter || Num(f, "reads") != pass * blocksPerWriter || Num(f, "err") != 0 || Num(f, "vbad") != 0 || Num(f, "bad") != 0)
                    {
                        problems.Add($"writer {w}: '{f.Value}': expected exactly {pass} x {blocksPerWriter} completed writes and read-before-write checks, no I/O error, no lost write and no mismatch");
                    }

                    var check = BlockPattern.CheckRegion(image, tag, firstOff, blocksPerWriter, pass);
                    Log($"host image, writer {w}: {check.Blocks} blocks checked against pass {pass}: {check.Mismatches} mismatch(es), {check.HoldPreviousPass} holding pass {pass - 1}");
                    if (check.Mismatches > 0)
                    {
                        problems.Add($"host image: {check.Mismatches} of writer {w}'s {check.Blocks} blocks do not hold its last pass {pass} " +
                                     $"({check.HoldPreviousPass} hold pass {pass - 1}, i.e. lost writes): {string.Join("; ", check.Examples)}");
                    }
                }

                foreach (var off in new[] { RegionStart - BlockPattern.BlockSize, RegionStart + RegionBytes })
                {
                    if (!BlockPattern.IsZeroBlock(image, off))
                    {
                        problems.Add($"host image: the block at {off}, just outside the written region, is not zero");
                    }
                }
            }

            var firstErrors = first.ErrorEntries();
            if (firstErrors.Count > 0)
            {
                problems.Add("the first backend logged errors before the kill:\n" + string.Join('\n', firstErrors));
            }

            CheckRecord(first, second, problems);
        }
        finally
        {
            if (second is not null)
            {
                var wasRunning = !second.Process.HasExited;
                await second.StopAsync();
                var requests = second.RequestCount();
                Log($"restarted backend stopped: exit {second.Process.ExitCode?.ToString(CultureInfo.InvariantCulture) ?? "?"}, requests={requests?.ToString(CultureInfo.InvariantCulture) ?? "(not printed)"}");
                if (wasRunning && (second.Process.ExitCode != 0 || requests is null or 0))
                {
                    problems.Add($"the restarted backend exited with {second.Process.ExitCode} on SIGTERM and printed requests={requests?.ToString(CultureInfo.InvariantCulture) ?? "(nothing)"} (expected 0 and a count > 0)");
                }

                // Inflight tracking: the requests the first process had taken from the rings and not completed are
                // handed out again by the SDK and re-executed by the sample, exactly those.
                long reported = second.ReportedResubmissions();
                long? resubmitted = second.ResubmittedCount();
                Log($"INFLIGHT: the SDK resubmitted {reported} request(s) left in flight by the killed backend; the sample re-executed {resubmitted?.ToString(CultureInfo.InvariantCulture) ?? "(not printed)"}");
                if (wasRunning && reported < heldAtKill)
                {
                    problems.Add($"the killed backend held {heldAtKill} request(s) in flight, but the restarted one's SDK resubmitted only {reported}: inflight tracking lost some");
                }

                if (wasRunning && resubmitted != reported)
                {
                    problems.Add($"the SDK reported {reported} chains to resubmit but the sample re-executed {resubmitted?.ToString(CultureInfo.InvariantCulture) ?? "(nothing printed)"}");
                }

                var errors = second.ErrorEntries();
                if (errors.Count > 0)
                {
                    problems.Add("the restarted backend logged errors:\n" + string.Join('\n', errors));
                }

                await second.DisposeAsync();
            }

            await first.DisposeAsync();
        }

        Log($"done after {_clock.Elapsed.TotalSeconds:F1} s, {problems.Count} problem(s)");
        if (problems.Count > 0)
        {
            Assert.Fail(string.Join("\n", problems.Select(x => "* " + x)) + run.Diagnostics());
        }
    }

    /// <summary>The guest's own verdict: stopped by the host, no I/O error (tool counters, kernel log), every block read back.</summary>
    private static void CheckGuestVerdict(BlockGuest guest, IReadOnlyList<string> lines, List<string> problems)
    {
        var verdict = guest.Verdict();
        if (verdict is null || verdict.Groups["verdict"].Value != "ok" || verdict.Groups["phase"].Value != "stress")
        {
            problems.Add($"guest verdict: {verdict?.Value ?? "(none)"}; " + string.Join(" | ", lines.Where(l => !PassLine.IsMatch(l) &&
                (l.Contains("mismatch", StringComparison.Ordinal) || l.Contains("error", StringComparison.Ordinal) || l.Contains("stress", StringComparison.Ordinal)))));
        }

        var stressDone = lines.Select(l => StressDoneLine.Match(l)).FirstOrDefault(m => m.Success);
        if (stressDone is null || Num(stressDone, "err") != 0 || Num(stressDone, "vbad") != 0 || stressDone.Groups["stop"].Value != "host")
        {
            problems.Add($"guest I/O: {stressDone?.Value ?? "no 'stress done' line"} (expected io_errors=0 verify_bad=0 stop=host); error and lost-write lines: " +
                         string.Join(" | ", lines.Where(l => l.Contains("blk io_error ", StringComparison.Ordinal) || l.Contains("blk verify_mismatch ", StringComparison.Ordinal))));
        }

        var exit = lines.Select(l => StressExitLine.Match(l)).FirstOrDefault(m => m.Success);
        if (exit is null || exit.Groups["code"].Value != "0")
        {
            problems.Add($"blkpattern stress exit status: {exit?.Groups["code"].Value ?? "(not printed)"}");
        }

        var dmesg = lines.Select(l => DmesgErrorsLine.Match(l)).FirstOrDefault(m => m.Success);
        var kernel = LogFile.ReadLines(guest.ConsolePath).Where(l => KernelTrouble.IsMatch(l)).ToList();
        if (dmesg is null || Num(dmesg, "n") != 0 || kernel.Count > 0)
        {
            problems.Add($"guest kernel: {dmesg?.Value ?? "no dmesg_io_errors line"}; lines about errors, resets or timeouts: {string.Join(" | ", kernel.Take(10))}");
        }

        var statusEnd = lines.Select(l => BlockGuest.StatusEndLine.Match(l)).FirstOrDefault(m => m.Success);
        if (statusEnd is null || int.Parse(statusEnd.Groups["status"].Value, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture) != 0x0f)
        {
            problems.Add($"virtio status after the workload is {statusEnd?.Value ?? "(not printed)"}, expected 0x0f");
        }
    }

    /// <summary>The restarted backend ran from the first one's acked-state record (same key, same features).</summary>
    private static void CheckRecord(BlockSampleBackend first, BlockSampleBackend second, List<string> problems)
    {
        var saved = CompatSampleLog.Matches(first.LogPath, CompatSampleLog.Saved);
        var loaded = CompatSampleLog.Matches(second.LogPath, CompatSampleLog.Loaded);
        if (saved.Count == 0)
        {
            problems.Add("the first backend never saved an acked-state record (--state-dir)");
        }
        else if (loaded.Count == 0)
        {
            problems.Add("the restarted backend did not load the acked-state record from the state directory");
        }
        else if (loaded[0].Groups["key"].Value != saved[^1].Groups["key"].Value || CompatSampleLog.Hex(loaded[0], "features") != CompatSampleLog.Hex(saved[^1], "features"))
        {
            problems.Add($"the restarted backend loaded '{loaded[0].Value}', but the first one last saved '{saved[^1].Value}'");
        }
    }

    private static void CheckDevice(GuestBlockDevice? d, string serial, List<string> problems)
    {
        if (d is null)
        {
            problems.Add("the guest printed no 'VHOSTCOMPAT: blkdev' line");
            return;
        }

        if (d.Status != 0x0f || d.Serial != serial || d.HardwareQueues != Queues || d.ReadOnly || d.SizeSectors != DiskSize / 512)
        {
            problems.Add($"guest device: status 0x{d.Status:x2}, serial '{d.Serial}', {d.HardwareQueues} hw queue(s), ro={d.ReadOnly}, {d.SizeSectors} sectors " +
                         $"(expected 0x0f, '{serial}', {Queues}, false, {DiskSize / 512})");
        }
    }

    /// <summary>
    /// The restarted backend's milestones from its log timestamps, relative to its process start (derived from the
    /// sample's own "First request completed N ms after process start" line and that line's timestamp).
    /// </summary>
    private static List<(string Key, string Value)> Milestones(string logPath)
    {
        var lines = LogFile.ReadLines(logPath);
        var result = new List<(string Key, string Value)>();
        var firstLine = lines.FirstOrDefault(l => BlockSampleBackend.FirstRequestLine.IsMatch(l));
        if (firstLine is null || Stamp(firstLine) is not { } firstAt)
        {
            result.Add(("first request", "never"));
            return result;
        }

        var firstMs = long.Parse(BlockSampleBackend.FirstRequestLine.Match(firstLine).Groups["ms"].Value, CultureInfo.InvariantCulture);
        var start = firstAt - TimeSpan.FromMilliseconds(firstMs);
        string At(Func<string, bool> which, int nth = 1)
        {
            var l = lines.Where(which).Skip(nth - 1).FirstOrDefault();
            return l is not null && Stamp(l) is { } t ? ((t - start).TotalMilliseconds.ToString("F0", CultureInfo.InvariantCulture) + " ms") : "not logged";
        }

        result.Add(("listening", At(l => l.Contains("Listening for a vhost-user frontend", StringComparison.Ordinal))));
        result.Add(("frontend connected", At(l => CompatSampleLog.Connected.IsMatch(l))));
        result.Add(("queue 0 started", At(l => l.Contains("Queue 0 started", StringComparison.Ordinal))));
        result.Add(("queue 1 started", At(l => l.Contains("Queue 1 started", StringComparison.Ordinal))));
        result.Add(("first request completed", firstMs.ToString(CultureInfo.InvariantCulture) + " ms"));
        return result;
    }

    /// <summary>The "HH:mm:ss.fff" timestamp the sample's console logger puts in front of each line.</summary>
    private static TimeSpan? Stamp(string line)
    {
        var m = LogTimestamp.Match(line);
        return m.Success ? TimeSpan.ParseExact(m.Groups["t"].Value, @"hh\:mm\:ss\.fff", CultureInfo.InvariantCulture) : null;
    }

    /// <summary>Each writer's last completed pass (0 before the first).</summary>
    private static int[] LastPasses(BlockGuest guest)
    {
        var passes = new int[2];
        foreach (var m in CompatSampleLog.Matches(guest.ConsolePath, PassLine))
        {
            var w = (int)Num(m, "w");
            passes[w] = Math.Max(passes[w], (int)Num(m, "pass"));
        }

        return passes;
    }

    private static async Task<bool> WaitForPassesAsync(BlockGuest guest, int[] atLeast, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < timeout && !guest.Process.HasExited)
        {
            var p = LastPasses(guest);
            if (p[0] >= atLeast[0] && p[1] >= atLeast[1])
            {
                return true;
            }

            await Task.Delay(200);
        }

        return false;
    }

    /// <summary>Puts "VHOSTCOMPAT-STOP" into the control block; the backend serves it to the guest's O_DIRECT polling reads.</summary>
    private static void WriteStop(string image)
    {
        using var h = File.OpenHandle(image, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
        var block = new byte[BlockPattern.BlockSize];
        Encoding.ASCII.GetBytes("VHOSTCOMPAT-STOP\n").CopyTo(block, 0);
        RandomAccess.Write(h, block, ControlOffset);
    }

    private static long Num(Match m, string group) => long.Parse(m.Groups[group].Value, CultureInfo.InvariantCulture);

    private static string Secs(TimeSpan? t) => t is { } v ? v.TotalSeconds.ToString("F2", CultureInfo.InvariantCulture) + " s" : "never";

    private void Log(string line) => output.WriteLine($"[{_clock.Elapsed.TotalSeconds,6:F1} s] {line}");

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);
}
