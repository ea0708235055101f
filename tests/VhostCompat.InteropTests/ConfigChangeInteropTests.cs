using System.Diagnostics;
using System.Globalization;
using VhostCompat.InteropTests.Harness;
using Xunit.Abstractions;

namespace VhostCompat.InteropTests;

/// <summary>
/// Backend-initiated config change against real QEMU: an in-process vhost-user-blk device (<see cref="ResizableBlockDevice"/>)
/// grows its capacity while the guest runs and calls <c>BackendRequests.NotifyConfigChanged()</c>. QEMU's vhost-user-blk
/// answers CONFIG_CHANGE_MSG with GET_CONFIG and, the capacity being different, raises a config interrupt; the guest's
/// virtio_blk driver then reports the new size in /sys/block/vda/size (and logs "new size").
/// </summary>
[Collection(QemuCollection.Name)]
[Trait("Category", "Interop")]
public sealed class ConfigChangeInteropTests(ITestOutputHelper output)
{
    private const long InitialBytes = 32L << 20;
    private const long GrownBytes = 48L << 20;

    /// <summary>Boot to the guest's waiting line takes ~10-30 s under TCG; the machine is shared, so allow much more.</summary>
    private static readonly TimeSpan BootTimeout = TimeSpan.FromSeconds(
        int.TryParse(Environment.GetEnvironmentVariable("VHOSTCOMPAT_INTEROP_BOOT_TIMEOUT"), CultureInfo.InvariantCulture, out var s) ? s : 180);

    /// <summary>QEMU 7.2 under TCG needs vectors=0 (INTx) with vhost-user devices (the MSI-X crash at DRIVER_OK).</summary>
    [SkippableFact]
    public Task QemuGuest_sees_the_new_capacity_after_NotifyConfigChanged() =>
        GuestSeesNewCapacityAsync(InteropPrerequisites.RequireQemuGuest(), nameof(QemuGuest_sees_the_new_capacity_after_NotifyConfigChanged), vectors: 0);

    /// <summary>QEMU 10.0 with MSI-X (QEMU's default vectors): the config interrupt arrives on its own vector.</summary>
    [SkippableFact]
    public Task Qemu10_guest_sees_the_new_capacity_after_NotifyConfigChanged_with_MSI_X() =>
        GuestSeesNewCapacityAsync(
            InteropPrerequisites.RequireQemuGuest(QemuPeer.Qemu100), nameof(Qemu10_guest_sees_the_new_capacity_after_NotifyConfigChanged_with_MSI_X), vectors: null);

    private async Task GuestSeesNewCapacityAsync(InteropTools tools, string runName, int? vectors)
    {
        var run = InteropRun.Create(runName);
        output.WriteLine($"run directory: {run.Directory}; QEMU {tools.QemuVersion ?? tools.Qemu}");
        var clock = Stopwatch.StartNew();
        await ConfigChangeGuest.GetInitramfsAsync(tools);
        var device = new ResizableBlockDevice(InitialBytes, GrownBytes, "vccfg-" + Guid.NewGuid().ToString("N")[..8]);
        var problems = new List<string>();
        await using var backend = await InProcessBackend.StartAsync(run, device, run.PathFor("blk.sock"));

        long notifiedAt, configReadAt, seenAt;
        string after;
        await using (var guest = await ConfigChangeGuest.StartAsync(run, tools, backend.SocketPath, vectors))
        {
            output.WriteLine($"qemu pid {guest.Process.Pid}: {guest.Process.CommandLine}");
            var waiting = await guest.WaitForConsoleAsync(ConfigChangeGuest.WaitingLine, BootTimeout);
            if (waiting is null)
            {
                Assert.Fail($"the guest never printed its waiting-for-resize line ({guest.Observed()}); requests: {string.Join(' ', backend.Requests())}{run.Diagnostics()}");
            }

            output.WriteLine($"[{clock.Elapsed.TotalSeconds,5:F1} s] guest waits at uptime {waiting.Groups["uptime"].Value} s, sectors {waiting.Groups["sectors"].Value}");
            device.BackendRequests.IsOpen.Should().BeTrue("QEMU hands over the backend-request channel (SET_BACKEND_REQ_FD) when BACKEND_REQ is offered");
            long configReadsBefore = device.ConfigReads;

            device.Resize(GrownBytes);
            var configRead = device.NextConfigReadAsync();
            notifiedAt = Stopwatch.GetTimestamp();
            device.BackendRequests.NotifyConfigChanged().Should().BeTrue("the channel is open and CONFIG was negotiated");

            configReadAt = await configRead.WaitAsync(TimeSpan.FromSeconds(30)).ContinueWith(t => t.IsCompletedSuccessfully ? t.Result : 0, TaskScheduler.Default);
            (var seen, seenAt) = await guest.WaitForConsoleCloselyAsync(ConfigChangeGuest.AfterLine, TimeSpan.FromSeconds(150));
            if (configReadAt == 0)
            {
                problems.Add($"QEMU sent no GET_CONFIG within 30 s of CONFIG_CHANGE_MSG (config reads before: {configReadsBefore}, now: {device.ConfigReads})");
            }

            if (seen is null)
            {
                Assert.Fail($"the guest never printed its size-after line ({guest.Observed()}){run.Diagnostics()}");
            }

            after = seen.Groups["sectors"].Value;
            output.WriteLine($"[{clock.Elapsed.TotalSeconds,5:F1} s] guest sees {after} sectors after {seen.Groups["polls"].Value} polls of 50 ms, at uptime {seen.Groups["uptime"].Value} s");
            if (await guest.WaitForConsoleAsync(ConfigChangeGuest.DoneLine, TimeSpan.FromSeconds(60)) is null)
            {
                problems.Add($"the guest never printed its done line ({guest.Observed()})");
            }

            if (!await guest.WaitForExitAsync(TimeSpan.FromSeconds(30)))
            {
                problems.Add($"QEMU did not exit within 30 s after the guest powered off ({guest.Observed()})");
            }

            foreach (var l in guest.GuestLines())
            {
                output.WriteLine("guest: " + l);
            }

            CheckGuest(guest, problems);
            InteropVerdict.AddBackendAndQemuProblems(problems, backend.ErrorLines(), guest.StderrErrorLines(), guest.Process.ExitCode);
        }

        var toGetConfig = configReadAt == 0 ? double.NaN : Stopwatch.GetElapsedTime(notifiedAt, configReadAt).TotalMilliseconds;
        var toGuest = Stopwatch.GetElapsedTime(notifiedAt, seenAt).TotalMilliseconds;
        output.WriteLine($"TIMING notify->GET_CONFIG {toGetConfig:F1} ms; notify->guest line seen on the host {toGuest:F0} ms (guest polls its size every 50 ms, the host its console every 10 ms)");
        var requests = backend.Requests();
        output.WriteLine($"backend requests: {string.Join(' ', requests)}");
        foreach (var l in backend.LogLines().Where(l => l.Contains("CONFIG_CHANGE_MSG", StringComparison.Ordinal)))
        {
            output.WriteLine("backend: " + l.Trim());
        }

        if (!requests.Contains("SET_BACKEND_REQ_FD"))
        {
            problems.Add("QEMU never sent SET_BACKEND_REQ_FD: " + string.Join(' ', requests));
        }

        InteropVerdict.FailOnProblems(problems, () => string.Join(' ', requests), run);
    }

    private static int Hex(string digits) => int.Parse(digits, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);

    private static void CheckGuest(ConfigChangeGuest guest, List<string> problems)
    {
        const long before = InitialBytes / ResizableBlockDevice.SectorSize, grown = GrownBytes / ResizableBlockDevice.SectorSize;
        var sizeBefore = guest.Line(ConfigChangeGuest.BeforeLine);
        if (sizeBefore is null || long.Parse(sizeBefore.Groups["sectors"].Value, CultureInfo.InvariantCulture) != before)
        {
            problems.Add($"size before: {sizeBefore?.Value ?? "(no line)"}, expected {before} sectors");
        }
        else if (Hex(sizeBefore.Groups["status"].Value) != 0x0f)
        {
            problems.Add($"virtio status before the resize is 0x{sizeBefore.Groups["status"].Value}, expected 0x0f (DRIVER_OK)");
        }

        var sizeAfter = guest.Line(ConfigChangeGuest.AfterLine);
        if (sizeAfter is null || long.Parse(sizeAfter.Groups["sectors"].Value, CultureInfo.InvariantCulture) != grown)
        {
            problems.Add($"size after: {sizeAfter?.Value ?? "(no line)"}, expected {grown} sectors");
        }

        var dmesg = guest.Line(ConfigChangeGuest.NewSizeDmesgLine);
        if (dmesg is null || long.Parse(dmesg.Groups["sectors"].Value, CultureInfo.InvariantCulture) != grown)
        {
            problems.Add($"the guest kernel logged no 'new size: {grown} 512-byte logical blocks' ({dmesg?.Value ?? "no such dmesg line"})");
        }

        var last = guest.Line(ConfigChangeGuest.LastSectorLine);
        if (last is null || last.Groups["head"].Value != ResizableBlockDevice.GrownMarker)
        {
            problems.Add($"the new last sector does not start with {ResizableBlockDevice.GrownMarker}: {last?.Value ?? "(no line)"}");
        }

        var end = guest.Line(ConfigChangeGuest.StatusEndLine);
        if (end is null || Hex(end.Groups["status"].Value) != 0x0f)
        {
            problems.Add($"virtio status after the resize is {end?.Value ?? "(not printed)"}, expected 0x0f (the device must not need a reset)");
        }
    }
}
