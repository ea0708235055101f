using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using VhostCompat.InteropTests.Harness;
using Xunit.Abstractions;
using static VhostCompat.InteropTests.Harness.VirtioNetFeatures;

namespace VhostCompat.InteropTests;

/// <summary>
/// samples/Net as an L2 learning switch with two ports, each driven by a different real, unmodified frontend:
/// frames a frontend sends on one port must come out of the other port's RX ring, and the answers must come back.
/// </summary>
[Collection(QemuCollection.Name)]
[Trait("Category", "Interop")]
public sealed class SwitchInteropTests(ITestOutputHelper output)
{
    /// <summary>Boot to the guest's status line takes ~11-20 s under TCG (~40 s with two guests on two cores); allow much more.</summary>
    private static readonly TimeSpan GuestStatusTimeout = TimeSpan.FromSeconds(
        int.TryParse(Environment.GetEnvironmentVariable("VHOSTCOMPAT_INTEROP_BOOT_TIMEOUT"), CultureInfo.InvariantCulture, out var s) ? s : 180);

    private const int PingCount = 3;

    [SkippableFact]
    public Task QemuGuest_pings_DPDK_virtio_user_through_the_switch()
    {
        var tools = InteropPrerequisites.RequireQemuGuest();
        var testpmd = InteropPrerequisites.RequireTestpmd();
        return PingDpdkThroughSwitchAsync(tools, testpmd, nameof(QemuGuest_pings_DPDK_virtio_user_through_the_switch));
    }

    /// <summary>The QEMU-guest-pings-testpmd test with the QEMU build of <paramref name="tools"/> and the given testpmd.</summary>
    internal async Task PingDpdkThroughSwitchAsync(InteropTools tools, string testpmd, string runName, string netDeviceProperties = "")
    {
        var run = InteropRun.Create(runName);
        output.WriteLine($"run directory: {run.Directory}");
        var clock = Stopwatch.StartNew();
        var problems = new List<string>();
        string[] sockets = [run.PathFor("port0.sock"), run.PathFor("port1.sock")];

        // Port 0: QEMU guest 10.0.0.2 pinging 10.0.0.1. Port 1: testpmd virtio-user in icmpecho mode, which answers
        // ARP for any address and echo requests, so it plays 10.0.0.1.
        await using var backend = await SampleNetBackend.StartAsync(run, sockets);
        await using var dpdk = await DpdkVirtioUserFrontend.StartAsync(run, testpmd, sockets[1], mac: "52:54:00:00:00:01");
        output.WriteLine($"[{clock.Elapsed.TotalSeconds:F1} s] testpmd pid {dpdk.Process.Pid} forwarding on port 1: {dpdk.Process.CommandLine}");

        var options = new QemuGuestOptions { SocketPath = sockets[0], Mac = "52:54:00:12:34:02", NetDeviceProperties = netDeviceProperties };
        options.GuestParameters["mode"] = "ping";
        options.GuestParameters["ip"] = "10.0.0.2/24";
        options.GuestParameters["peer"] = "10.0.0.1";
        options.GuestParameters["count"] = PingCount.ToString(CultureInfo.InvariantCulture);
        options.GuestParameters["wait"] = "30";

        GuestNetStatus? status;
        PingResult? ping;
        (long Tx, long Rx)? guestCounters;
        int? qemuExit;
        IReadOnlyList<string> qemuErrors;
        await using (var guest = await QemuGuest.StartAsync(run, tools, options))
        {
            output.WriteLine($"qemu pid {guest.Process.Pid} on port 0: {guest.Process.CommandLine}");
            status = await guest.WaitForNetStatusAsync(GuestStatusTimeout);
            if (status is null)
            {
                Assert.Fail($"the guest never printed its virtio-net status line ({Why(guest.Process, GuestStatusTimeout)}){run.Diagnostics()}");
            }

            output.WriteLine($"[{clock.Elapsed.TotalSeconds:F1} s] guest status 0x{status.Status:x2} after {status.SeenAfter.TotalSeconds:F1} s, acked {Describe(status.Features)}");
            ping = await PingResult.WaitAsync(guest, TimeSpan.FromSeconds(90));
            output.WriteLine($"[{clock.Elapsed.TotalSeconds:F1} s] guest: {ping?.ToString() ?? "no ping result"}");
            if (!await guest.WaitForExitAsync(TimeSpan.FromSeconds(60)))
            {
                problems.Add($"QEMU did not exit within 60 s after the ping (the guest powers off when done; {guest.Observed()})");
            }

            qemuExit = guest.Process.ExitCode;
            qemuErrors = guest.StderrErrorLines();
            guestCounters = GuestCounters(guest);
            LogGuestLines(guest);
        }

        await dpdk.StopAsync();
        var pmdStats = dpdk.Statistics();
        output.WriteLine($"testpmd exit {dpdk.Process.ExitCode?.ToString(CultureInfo.InvariantCulture) ?? "(running)"}, port 0 statistics: {pmdStats?.ToString() ?? "(none printed)"}");
        var counters = await StopBackendAsync(backend, problems);

        CheckGuest("guest", status, qemuExit, qemuErrors, problems);
        if (ping is null)
        {
            problems.Add("the guest printed no 'ping transmitted=.. received=..' line");
        }
        else if (ping.Received < 1)
        {
            problems.Add($"the guest got no echo reply from testpmd through the switch ({ping})");
        }
        else if (ping.Received < ping.Transmitted)
        {
            output.WriteLine($"note: only {ping.Received} of {ping.Transmitted} echo requests were answered");
        }

        var replies = ping?.Received ?? 0;
        CheckPort(counters, 0, "the QEMU guest", replies, problems);
        CheckPort(counters, 1, "testpmd", replies, problems);
        CheckGuestCounters(counters, 0, "the QEMU guest", guestCounters, problems);
        if (pmdStats is null)
        {
            problems.Add("testpmd printed no forward statistics for port 0 when it stopped");
        }
        else if (counters.TryGetValue(1, out var port1) && (port1.RxPackets != pmdStats.RxPackets || port1.TxPackets != pmdStats.TxPackets))
        {
            // testpmd polls until it stops and only answers what it gets: both sides must count the same frames.
            problems.Add($"the switch's port 1 counters ({port1}) differ from testpmd's own ({pmdStats})");
        }

        if (dpdk.Process.ExitCode is not 0)
        {
            problems.Add($"testpmd exited with {dpdk.Process.ExitCode?.ToString(CultureInfo.InvariantCulture) ?? "nothing (still running)"} after SIGTERM");
        }

        output.WriteLine($"[{clock.Elapsed.TotalSeconds:F1} s] backend requests: {backend.RequestSequence()}");
        Report(problems, backend, run);
    }

    [SkippableFact]
    public async Task Two_QEMU_guests_ping_each_other_through_the_switch()
    {
        var tools = InteropPrerequisites.RequireQemuGuest();
        var run = InteropRun.Create(nameof(Two_QEMU_guests_ping_each_other_through_the_switch));
        output.WriteLine($"run directory: {run.Directory}");
        var clock = Stopwatch.StartNew();
        var problems = new List<string>();
        string[] sockets = [run.PathFor("port0.sock"), run.PathFor("port1.sock")];
        await using var backend = await SampleNetBackend.StartAsync(run, sockets);

        // Port 1: 10.0.0.3 stays up (the kernel answers ARP and ping) until it has seen PingCount echo requests.
        var serveOptions = new QemuGuestOptions { SocketPath = sockets[1], Mac = "52:54:00:12:34:03" };
        serveOptions.GuestParameters["mode"] = "serve";
        serveOptions.GuestParameters["ip"] = "10.0.0.3/24";
        serveOptions.GuestParameters["count"] = PingCount.ToString(CultureInfo.InvariantCulture);
        serveOptions.GuestParameters["timeout"] = "240";

        // Port 0: 10.0.0.2 boots at the same time, retries ARP until 10.0.0.3 is up, then pings it.
        var pingOptions = new QemuGuestOptions { SocketPath = sockets[0], Mac = "52:54:00:12:34:02" };
        pingOptions.GuestParameters["mode"] = "ping";
        pingOptions.GuestParameters["ip"] = "10.0.0.2/24";
        pingOptions.GuestParameters["peer"] = "10.0.0.3";
        pingOptions.GuestParameters["count"] = PingCount.ToString(CultureInfo.InvariantCulture);
        pingOptions.GuestParameters["wait"] = "150";

        GuestNetStatus? pingStatus, serveStatus;
        PingResult? ping;
        Match? served;
        (long Tx, long Rx)? pingCounters, serveCounters;
        int? pingExit, serveExit;
        IReadOnlyList<string> pingErrors, serveErrors;
        await using (var server = await QemuGuest.StartAsync(run, tools, serveOptions, "qemu-serve"))
        await using (var pinger = await QemuGuest.StartAsync(run, tools, pingOptions, "qemu-ping"))
        {
            output.WriteLine($"qemu-serve pid {server.Process.Pid} on port 1, qemu-ping pid {pinger.Process.Pid} on port 0: {pinger.Process.CommandLine}");
            var statusTasks = new[] { pinger.WaitForNetStatusAsync(GuestStatusTimeout), server.WaitForNetStatusAsync(GuestStatusTimeout) };
            await Task.WhenAll(statusTasks);
            pingStatus = statusTasks[0].Result;
            serveStatus = statusTasks[1].Result;
            if (pingStatus is null || serveStatus is null)
            {
                Assert.Fail(
                    $"a guest never printed its virtio-net status line (qemu-ping: {(pingStatus is null ? Why(pinger.Process, GuestStatusTimeout) : "ok")}, " +
                    $"qemu-serve: {(serveStatus is null ? Why(server.Process, GuestStatusTimeout) : "ok")}){run.Diagnostics()}");
            }

            output.WriteLine($"[{clock.Elapsed.TotalSeconds:F1} s] status lines: qemu-ping 0x{pingStatus.Status:x2} after {pingStatus.SeenAfter.TotalSeconds:F1} s, " +
                             $"qemu-serve 0x{serveStatus.Status:x2} after {serveStatus.SeenAfter.TotalSeconds:F1} s");

            ping = await PingResult.WaitAsync(pinger, TimeSpan.FromSeconds(200));
            output.WriteLine($"[{clock.Elapsed.TotalSeconds:F1} s] qemu-ping: {ping?.ToString() ?? "no ping result"}");
            served = await server.WaitForConsoleAsync(QemuGuest.ServedLine, TimeSpan.FromSeconds(ping is { Received: PingCount } ? 30 : 5));
            output.WriteLine($"[{clock.Elapsed.TotalSeconds:F1} s] qemu-serve: {served?.Value ?? "no 'served' line (still serving)"}");

            if (!await pinger.WaitForExitAsync(TimeSpan.FromSeconds(60)))
            {
                problems.Add($"qemu-ping did not exit within 60 s after its ping (the guest powers off when done; {pinger.Observed()})");
            }

            // The serving guest powers off by itself once it has seen every echo request; otherwise QMP 'quit' ends it.
            if (served is not null && !await server.WaitForExitAsync(TimeSpan.FromSeconds(60)))
            {
                problems.Add($"qemu-serve did not exit within 60 s after its 'served' line ({server.Observed()})");
            }

            pingExit = pinger.Process.ExitCode;
            serveExit = server.Process.ExitCode;
            pingErrors = pinger.StderrErrorLines();
            serveErrors = server.Process.HasExited ? server.StderrErrorLines() : [];
            pingCounters = GuestCounters(pinger);
            serveCounters = GuestCounters(server);
            LogGuestLines(pinger);
            LogGuestLines(server);
        }

        var counters = await StopBackendAsync(backend, problems);

        CheckGuest("qemu-ping", pingStatus, pingExit, pingErrors, problems);
        CheckGuest("qemu-serve", serveStatus, served is null ? 0 : serveExit, serveErrors, problems);
        if (ping is null)
        {
            problems.Add("qemu-ping printed no 'ping transmitted=.. received=..' line");
        }
        else if (ping.Received < 1)
        {
            problems.Add($"qemu-ping got no echo reply from qemu-serve through the switch ({ping})");
        }
        else if (ping.Received < ping.Transmitted)
        {
            output.WriteLine($"note: only {ping.Received} of {ping.Transmitted} echo requests were answered");
        }

        var replies = ping?.Received ?? 0;
        if (served is null)
        {
            if (replies == PingCount)
            {
                problems.Add("qemu-ping got every reply, but qemu-serve never printed its 'served' line");
            }
        }
        else
        {
            var requests = int.Parse(served.Groups["requests"].Value, CultureInfo.InvariantCulture);
            var sent = int.Parse(served.Groups["replies"].Value, CultureInfo.InvariantCulture);
            if (requests < 1 || sent < replies)
            {
                problems.Add($"qemu-serve's ICMP counters do not match qemu-ping's {replies} replies: {served.Value}");
            }
        }

        CheckPort(counters, 0, "qemu-ping", replies, problems);
        CheckPort(counters, 1, "qemu-serve", replies, problems);
        CheckGuestCounters(counters, 0, "qemu-ping", pingCounters, problems);
        if (served is not null)
        {
            CheckGuestCounters(counters, 1, "qemu-serve", serveCounters, problems);
        }
        output.WriteLine($"[{clock.Elapsed.TotalSeconds:F1} s] backend requests: {backend.RequestSequence()}");
        Report(problems, backend, run);
    }

    private static string Why(ExternalProcess qemu, TimeSpan timeout) =>
        qemu.HasExited
            ? $"QEMU exited with {qemu.ExitCode} after {qemu.Elapsed.TotalSeconds:F1} s"
            : $"nothing within {timeout.TotalSeconds:F0} s";

    private void LogGuestLines(QemuGuest guest)
    {
        foreach (var line in guest.GuestLines())
        {
            output.WriteLine($"{guest.Process.Name}: {line}");
        }

        foreach (var w in guest.StderrWarningLines())
        {
            output.WriteLine($"{guest.Process.Name} QEMU: {w}");
        }
    }

    /// <summary>SIGTERM; the switch then prints its per-port counters and exits with 0.</summary>
    private async Task<IReadOnlyDictionary<int, SwitchPortCounters>> StopBackendAsync(SampleNetBackend backend, List<string> problems)
    {
        // A frontend disconnecting must not end a listening backend.
        if (backend.Process.HasExited)
        {
            problems.Add($"the backend exited with code {backend.Process.ExitCode} before it was stopped");
        }

        await backend.StopAsync();
        var counters = backend.PortCounters();
        output.WriteLine($"backend exit {backend.Process.ExitCode?.ToString(CultureInfo.InvariantCulture) ?? "(running)"} after SIGTERM");
        foreach (var c in counters.Values)
        {
            output.WriteLine("backend " + c);
        }

        if (backend.Process.ExitCode is not 0)
        {
            problems.Add($"the backend exited with {backend.Process.ExitCode?.ToString(CultureInfo.InvariantCulture) ?? "nothing (still running)"} after SIGTERM, expected 0");
        }

        return counters;
    }

    private static void CheckGuest(string name, GuestNetStatus status, int? exitCode, IReadOnlyList<string> stderrErrors, List<string> problems)
    {
        if (status.Status != 0x0f)
        {
            problems.Add($"{name}: virtio status is 0x{status.Status:x2}, expected 0x0f (ACKNOWLEDGE|DRIVER|FEATURES_OK|DRIVER_OK)");
        }

        if (exitCode is not 0)
        {
            problems.Add($"{name}: QEMU exit code {exitCode?.ToString(CultureInfo.InvariantCulture) ?? "none (still running)"} (124 = harness timeout, 128+N = signal N)");
        }

        if (stderrErrors.Count > 0)
        {
            problems.Add($"{name}: QEMU stderr has error lines:\n" + string.Join('\n', stderrErrors));
        }
    }

    /// <summary>Every reply the pinging side got crossed the switch twice: request in on one port, reply in on the other.</summary>
    private static void CheckPort(IReadOnlyDictionary<int, SwitchPortCounters> counters, int port, string frontend, int replies, List<string> problems)
    {
        if (!counters.TryGetValue(port, out var c))
        {
            problems.Add($"the backend printed no counters for port {port} ({frontend}) on exit");
            return;
        }

        var atLeast = Math.Max(1, replies);
        if (c.TxPackets < atLeast || c.RxPackets < atLeast)
        {
            problems.Add($"port {port} ({frontend}) should have sent and received at least {atLeast} frames through the switch: {c}");
        }
    }

    private static (long Tx, long Rx)? GuestCounters(QemuGuest guest)
    {
        var m = guest.GuestLines().Select(l => QemuGuest.CountersLine.Match(l)).LastOrDefault(c => c.Success);
        return m is null
            ? null
            : (long.Parse(m.Groups["tx"].Value, CultureInfo.InvariantCulture), long.Parse(m.Groups["rx"].Value, CultureInfo.InvariantCulture));
    }

    /// <summary>
    /// The switch must have taken every frame the guest's driver sent (its tx_packets) and delivered at least every
    /// frame the driver received. It may count more: frames after the guest printed its counters, or dropped ones.
    /// </summary>
    private static void CheckGuestCounters(IReadOnlyDictionary<int, SwitchPortCounters> counters, int port, string guest, (long Tx, long Rx)? guestCounters, List<string> problems)
    {
        if (guestCounters is not { } g)
        {
            problems.Add($"{guest} printed no final 'tx_packets=.. rx_packets=..' line");
            return;
        }

        if (counters.TryGetValue(port, out var c) && (c.TxPackets < g.Tx || c.RxPackets < g.Rx))
        {
            problems.Add($"{guest}'s driver counted tx_packets={g.Tx} rx_packets={g.Rx}, more than the switch's port {port} ({c})");
        }
    }

    private static void Report(List<string> problems, SampleNetBackend backend, InteropRun run)
    {
        var backendErrors = backend.ErrorEntries();
        if (backendErrors.Count > 0)
        {
            problems.Add("backend logged errors:\n" + string.Join('\n', backendErrors));
        }

        if (problems.Count > 0)
        {
            Assert.Fail(string.Join("\n", problems.Select(p => "* " + p)) + "\nbackend requests: " + backend.RequestSequence() + run.Diagnostics());
        }
    }

    /// <summary>The guest's "ping transmitted=N received=M" line, with its ARP line when it waited for the peer.</summary>
    private sealed record PingResult(int Transmitted, int Received, string? Arp)
    {
        public static async Task<PingResult?> WaitAsync(QemuGuest guest, TimeSpan timeout)
        {
            var m = await guest.WaitForConsoleAsync(QemuGuest.PingLine, timeout);
            if (m is null)
            {
                return null;
            }

            var arp = guest.GuestLines().Select(l => QemuGuest.ArpLine.Match(l)).FirstOrDefault(a => a.Success);
            return new PingResult(
                int.Parse(m.Groups["tx"].Value, CultureInfo.InvariantCulture),
                int.Parse(m.Groups["rx"].Value, CultureInfo.InvariantCulture),
                arp?.Value);
        }

        public override string ToString() => $"ping transmitted={Transmitted} received={Received}" + (Arp is null ? string.Empty : $" ({Arp["VHOSTCOMPAT: ".Length..]})");
    }
}
