using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using VhostCompat.InteropTests.Harness;
using Xunit.Abstractions;

namespace VhostCompat.InteropTests;

/// <summary>
/// Crash recovery against real, unmodified peers: samples/Net as a two-port switch between two QEMU guests that both
/// connect with chardev <c>reconnect=1</c>. The backend is killed with SIGKILL (no clean shutdown, sockets left behind)
/// while the guest on port 0 is ARP-pinging the guest on port 1; a new backend process on the same sockets must get both
/// QEMUs back, and the replies must resume.
/// </summary>
[Collection(QemuCollection.Name)]
[Trait("Category", "Interop")]
public sealed partial class CrashRecoveryInteropTests(ITestOutputHelper output)
{
    private static readonly TimeSpan GuestStatusTimeout = TimeSpan.FromSeconds(
        int.TryParse(Environment.GetEnvironmentVariable("VHOSTCOMPAT_INTEROP_BOOT_TIMEOUT"), CultureInfo.InvariantCulture, out var s) ? s : 180);

    /// <summary>How long after the restart the guest's rx counter must start growing again.</summary>
    private static readonly TimeSpan ResumeTimeout = TimeSpan.FromSeconds(30);

    /// <summary>How long the restarted backend's sessions must stay up (no reconnect loop) after replies resumed.</summary>
    private static readonly TimeSpan StableWindow = TimeSpan.FromSeconds(8);

    private static readonly Regex RxQueueStarted = new(@"port (?<port>\d+): net rx queue of pair 0: started=True", RegexOptions.CultureInvariant);

    private readonly Stopwatch _clock = Stopwatch.StartNew();

    [SkippableFact]
    public Task Net_backend_killed_with_SIGKILL_under_ping_restarts_and_pings_resume() =>
        KilledUnderPingAsync(InteropPrerequisites.RequireQemuGuest(), nameof(Net_backend_killed_with_SIGKILL_under_ping_restarts_and_pings_resume));

    /// <summary>The test body with the given QEMU build (also run with QEMU 10.0 by <see cref="Qemu10InteropTests"/>).</summary>
    internal async Task KilledUnderPingAsync(InteropTools tools, string testName)
    {
        var run = InteropRun.Create(testName);
        Log($"run directory: {run.Directory}");
        var problems = new List<string>();
        string[] sockets = [run.PathFor("port0.sock"), run.PathFor("port1.sock")];

        var first = await SampleNetBackend.StartAsync(run, sockets, name: "backend-first");
        SampleNetBackend? second = null;
        try
        {
            Log($"backend pid {first.Process.Pid}: {first.Process.CommandLine}");

            // Port 1: 10.0.0.1 stays up (its kernel answers ARP) far longer than the test; QMP 'quit' ends it.
            var serveOptions = new QemuGuestOptions { SocketPath = sockets[1], Mac = "52:54:00:12:34:01", ReconnectSeconds = 1, Timeout = TimeSpan.FromMinutes(4) };
            serveOptions.GuestParameters["mode"] = "serve";
            serveOptions.GuestParameters["ip"] = "10.0.0.1/24";
            serveOptions.GuestParameters["count"] = "1000000";
            serveOptions.GuestParameters["timeout"] = "600";

            // Port 0: 10.0.0.2 arpings 10.0.0.1 once a second forever and prints its interface counters after each attempt.
            var loopOptions = new QemuGuestOptions { SocketPath = sockets[0], Mac = "52:54:00:12:34:02", ReconnectSeconds = 1, Timeout = TimeSpan.FromMinutes(4) };
            loopOptions.GuestParameters["mode"] = "loop";
            loopOptions.GuestParameters["ip"] = "10.0.0.2/24";
            loopOptions.GuestParameters["peer"] = "10.0.0.1";

            await using var server = await QemuGuest.StartAsync(run, tools, serveOptions, "qemu-serve");
            await using var pinger = await QemuGuest.StartAsync(run, tools, loopOptions, "qemu-loop");
            Log($"qemu-serve pid {server.Process.Pid} on port 1, qemu-loop pid {pinger.Process.Pid} on port 0: {pinger.Process.CommandLine}");

            var statusTasks = new[] { pinger.WaitForNetStatusAsync(GuestStatusTimeout), server.WaitForNetStatusAsync(GuestStatusTimeout) };
            await Task.WhenAll(statusTasks);
            var pingStatus = statusTasks[0].Result;
            var serveStatus = statusTasks[1].Result;
            if (pingStatus is null || serveStatus is null)
            {
                Assert.Fail($"a guest never printed its virtio-net status line (qemu-loop: {(pingStatus is null ? Why(pinger.Process, GuestStatusTimeout) : "ok")}, " +
                            $"qemu-serve: {(serveStatus is null ? Why(server.Process, GuestStatusTimeout) : "ok")}); backend requests: {first.RequestSequence()}{run.Diagnostics()}");
            }

            Log($"status lines: qemu-loop 0x{pingStatus.Status:x2} after {pingStatus.SeenAfter.TotalSeconds:F1} s, qemu-serve 0x{serveStatus.Status:x2} after {serveStatus.SeenAfter.TotalSeconds:F1} s");

            // Replies flow: the loop guest's rx counter grows between two ticks (ARP replies of qemu-serve through the switch).
            var serving = await server.WaitForConsoleAsync(QemuGuest.ServingLine, TimeSpan.FromSeconds(60));
            var flowing = await WaitForRxGrowthAsync(pinger, baselineRx: null, TimeSpan.FromSeconds(60));
            if (serving is null || flowing is null)
            {
                Assert.Fail($"before the crash: qemu-serve 'serving' line {(serving is null ? "missing" : "ok")}, loop guest rx growing {(flowing is null ? "no" : "yes")}; " +
                            $"last tick {LastTick(pinger)?.Value ?? "(none)"}; backend requests: {first.RequestSequence()}{run.Diagnostics()}");
            }

            Log($"replies flow before the crash: {flowing.Tick.Value}");

            // Crash: SIGKILL by PID, no clean shutdown; the socket files stay behind.
            // ExternalProcess's PID may be its 'timeout' wrapper: SIGKILL the backend program itself (the wrapper's child), by PID.
            var atKill = LastTick(pinger)!;
            var rxAtKill = Num(atKill, "rx");
            var victim = first.Process.ProgramPid();
            Log($"kill -9 {victim} (wrapper pid {first.Process.Pid})");
            if (Kill(victim, 9) != 0)
            {
                Assert.Fail($"kill -9 {victim} failed: errno {Marshal.GetLastPInvokeError()}{run.Diagnostics()}");
            }

            var killedAt = _clock.Elapsed;
            if (!await first.Process.WaitForExitAsync(TimeSpan.FromSeconds(10)))
            {
                Assert.Fail($"backend pid {first.Process.Pid} still running 10 s after SIGKILL{run.Diagnostics()}");
            }

            Log($"backend pid {victim} killed with SIGKILL (exit {first.Process.ExitCode?.ToString(CultureInfo.InvariantCulture) ?? "?"}); guest at the kill: {atKill.Value}");
            // Down for ~3 s: QEMU notices the hang-up and retries against a dead socket. The first tick after the kill may still
            // count a reply that was in flight when the signal landed; later ticks while down must not count any.
            var nAtKill = Num(atKill, "n");
            var firstDown = await WaitForTickAfterAsync(pinger, nAtKill, TimeSpan.FromSeconds(5));
            await Task.Delay(TimeSpan.FromSeconds(3));
            var beforeRestart = LastTick(pinger) ?? atKill;
            Log($"guest while the backend is down: first tick after the kill {firstDown?.Value ?? "(none)"}; last before the restart {beforeRestart.Value}");
            if (firstDown is not null && Num(beforeRestart, "n") > Num(firstDown, "n") && Num(beforeRestart, "rx") > Num(firstDown, "rx"))
            {
                problems.Add($"the loop guest's rx counter grew while the backend was dead ({firstDown.Value} -> {beforeRestart.Value}): was the backend really killed?");
            }

            // Restart on the same sockets; time from process start to serving.
            var restartClock = Stopwatch.StartNew();
            second = await SampleNetBackend.StartAsync(run, sockets, name: "backend-restarted");
            var listening = restartClock.Elapsed;
            Log($"restarted backend pid {second.Process.Pid} listening after {listening.TotalSeconds:F2} s ({(_clock.Elapsed - killedAt).TotalSeconds:F1} s after the kill)");

            TimeSpan? queuesStarted = null;
            Match? resumed = null;
            TimeSpan? resumedAfter = null;
            TimeSpan? resumedSinceKill = null;
            while (restartClock.Elapsed < ResumeTimeout && (queuesStarted is null || resumed is null) && !second.Process.HasExited && !pinger.Process.HasExited)
            {
                if (queuesStarted is null)
                {
                    var ports = CompatSampleLog.Matches(second.LogPath, RxQueueStarted).Select(m => m.Groups["port"].Value).Distinct().Count();
                    if (ports == 2)
                    {
                        queuesStarted = restartClock.Elapsed;
                    }
                }

                if (resumed is null && LastTick(pinger) is { } t && Num(t, "rx") > Num(beforeRestart, "rx") && Num(t, "n") > Num(beforeRestart, "n"))
                {
                    resumed = t;
                    resumedAfter = restartClock.Elapsed;
                    resumedSinceKill = _clock.Elapsed - killedAt;
                }

                await Task.Delay(100);
            }

            Log($"RESTART-TO-SERVING: backend start -> listening {listening.TotalSeconds:F2} s; -> both ports' rx queues started " +
                $"{(queuesStarted is { } q ? q.TotalSeconds.ToString("F2", CultureInfo.InvariantCulture) + " s" : "never (within " + ResumeTimeout.TotalSeconds + " s)")}; " +
                $"-> first new rx reply seen by the guest {(resumedAfter is { } r ? r.TotalSeconds.ToString("F2", CultureInfo.InvariantCulture) + " s" : "never (within " + ResumeTimeout.TotalSeconds + " s)")} " +
                $"(kill -> replies {(resumedSinceKill is { } k ? k.TotalSeconds.ToString("F2", CultureInfo.InvariantCulture) + " s" : "n/a")}, guest tick granularity ~1 s)");

            if (second.Process.HasExited)
            {
                problems.Add($"the restarted backend exited with {second.Process.ExitCode}");
            }

            if (queuesStarted is null)
            {
                problems.Add($"QEMU (reconnect=1) did not start both ports' rx queues on the restarted backend within {ResumeTimeout.TotalSeconds:F0} s; requests: {second.RequestSequence()}");
            }

            if (resumed is null)
            {
                problems.Add($"the loop guest's rx counter did not grow within {ResumeTimeout.TotalSeconds:F0} s of the restart (rx {rxAtKill} at the kill; last tick {LastTick(pinger)?.Value ?? "(none)"})");
            }
            else
            {
                Log($"replies resumed: {resumed.Value}");
                if (resumed.Groups["status"].Value != "0f")
                {
                    problems.Add($"after the restart the loop guest's device status is 0x{resumed.Groups["status"].Value}, expected 0x0f");
                }

                // No reconnect loop: one connection per port, no disconnect, and the replies keep coming.
                await Task.Delay(StableWindow);
                var connects = CompatSampleLog.Matches(second.LogPath, CompatSampleLog.Connected).Count;
                var disconnects = CompatSampleLog.Matches(second.LogPath, CompatSampleLog.Disconnected);
                var later = LastTick(pinger)!;
                Log($"{StableWindow.TotalSeconds:F0} s later: {connects} connect(s), {disconnects.Count} disconnect(s) on the restarted backend; guest {later.Value}");
                if (connects != 2 || disconnects.Count != 0)
                {
                    problems.Add($"reconnect loop: the restarted backend saw {connects} connections (2 expected, one per port) and {disconnects.Count} disconnections " +
                                 $"({string.Join("; ", disconnects.Select(d => d.Groups["reason"].Value))})");
                }

                if (Num(later, "rx") <= Num(resumed, "rx"))
                {
                    problems.Add($"the loop guest's rx counter stopped again after resuming ({resumed.Value} -> {later.Value})");
                }
            }

            foreach (var (guest, name) in new[] { (pinger, "qemu-loop"), (server, "qemu-serve") })
            {
                if (guest.Process.HasExited)
                {
                    problems.Add($"{name} exited with {guest.Process.ExitCode} during the test");
                }

                var errors = guest.StderrErrorLinesBeyondDisconnect();
                if (errors.Count > 0)
                {
                    problems.Add($"{name}: QEMU stderr has unexpected error lines:\n" + string.Join('\n', errors));
                }

                Log($"{name} stderr (line counts):\n" + string.Join('\n', LogFile.ReadLines(guest.StderrPath).GroupBy(l => l).Select(g => $"{g.Count(),4} x {g.Key}")));
            }

            var backendErrors = second.ErrorEntries();
            if (backendErrors.Count > 0)
            {
                problems.Add("the restarted backend logged errors:\n" + string.Join('\n', backendErrors));
            }

            Log($"restarted backend requests: {second.RequestSequence()}");
        }
        finally
        {
            // Guests (inner 'await using') are gone by now; stop the backends.
            if (second is not null)
            {
                await second.StopAsync();
                foreach (var c in second.PortCounters().Values)
                {
                    Log("restarted backend " + c);
                }

                await second.DisposeAsync();
            }

            await first.DisposeAsync();
        }

        Log($"done after {_clock.Elapsed.TotalSeconds:F1} s");
        if (problems.Count > 0)
        {
            Assert.Fail(string.Join("\n", problems.Select(x => "* " + x)) + run.Diagnostics());
        }
    }

    private sealed record RxGrowth(Match Tick);

    /// <summary>The first tick line numbered above <paramref name="n"/>, or null on timeout.</summary>
    private static async Task<Match?> WaitForTickAfterAsync(QemuGuest guest, long n, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < timeout && !guest.Process.HasExited)
        {
            if (CompatSampleLog.Matches(guest.ConsolePath, CompatSampleLog.Tick).FirstOrDefault(t => Num(t, "n") > n) is { } tick)
            {
                return tick;
            }

            await Task.Delay(100);
        }

        return null;
    }

    /// <summary>Waits for a tick whose rx_packets exceeds <paramref name="baselineRx"/> (or the first tick's, when null).</summary>
    private static async Task<RxGrowth?> WaitForRxGrowthAsync(QemuGuest guest, long? baselineRx, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        var baseline = baselineRx;
        while (clock.Elapsed < timeout && !guest.Process.HasExited)
        {
            if (LastTick(guest) is { } t)
            {
                baseline ??= Num(t, "rx");
                if (Num(t, "rx") > baseline)
                {
                    return new RxGrowth(t);
                }
            }

            await Task.Delay(100);
        }

        return null;
    }

    private static Match? LastTick(QemuGuest guest) =>
        CompatSampleLog.Matches(guest.ConsolePath, CompatSampleLog.Tick) is { Count: > 0 } ticks ? ticks[^1] : null;

    private static long Num(Match m, string group) => long.Parse(m.Groups[group].Value, CultureInfo.InvariantCulture);

    private static string Why(ExternalProcess p, TimeSpan timeout) =>
        p.HasExited ? $"QEMU exited with {p.ExitCode} after {p.Elapsed.TotalSeconds:F1} s" : $"nothing within {timeout.TotalSeconds:F0} s";

    private void Log(string line) => output.WriteLine($"[{_clock.Elapsed.TotalSeconds,6:F1} s] {line}");

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);
}
