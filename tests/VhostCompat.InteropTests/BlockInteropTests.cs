using System.Diagnostics;
using System.Globalization;
using VhostCompat.InteropTests.Harness;
using Xunit.Abstractions;

namespace VhostCompat.InteropTests;

/// <summary>
/// QEMU 7.2's vhost-user-blk-pci (an unmodified frontend, TCG guest) against samples/Block: data the guest writes
/// and flushes is in the image on the host and is read back by a second, freshly booted guest.
/// </summary>
[Collection(QemuCollection.Name)]
[Trait("Category", "Interop")]
public sealed class BlockInteropTests(ITestOutputHelper output)
{
    private const long DiskSize = 64L << 20;
    private const int Queues = 2;
    private const int VirtioBlkFMq = 12;
    private const int VirtioFVersion1 = 32;

    /// <summary>Boot to "done" takes ~15-25 s under TCG; the machine is shared, so allow much more.</summary>
    private static readonly TimeSpan GuestTimeout = TimeSpan.FromSeconds(
        int.TryParse(Environment.GetEnvironmentVariable("VHOSTCOMPAT_INTEROP_BOOT_TIMEOUT"), CultureInfo.InvariantCulture, out var s) ? s : 150);

    /// <summary>MSI-X vectors of vhost-user-blk-pci (0: INTx, what QEMU 7.2 under TCG needs).</summary>
    internal int Vectors { get; init; }

    /// <summary>The backend's --log-level ("Debug" also logs every vhost-user request).</summary>
    internal string BackendLogLevel { get; init; } = "Information";

    [SkippableFact]
    public Task QemuGuest_block_data_written_survives_a_reboot() =>
        WrittenDataSurvivesARebootAsync(InteropPrerequisites.RequireQemuGuest(), nameof(QemuGuest_block_data_written_survives_a_reboot));

    /// <summary>The two-boot block workload with the QEMU build of <paramref name="tools"/>.</summary>
    internal async Task WrittenDataSurvivesARebootAsync(InteropTools tools, string runName)
    {
        BlockGuest.RequireCompiler();
        var run = InteropRun.Create(runName);
        output.WriteLine($"run directory: {run.Directory}");
        var clock = Stopwatch.StartNew();
        await BlockGuest.GetInitramfsAsync(tools);
        output.WriteLine($"[{clock.Elapsed.TotalSeconds,5:F1} s] initramfs ready");

        var tag = Guid.NewGuid().ToString("N")[..10];
        var serial = "vcblk-" + tag[..8];           // virtio-blk IDs are at most 20 bytes
        var offsets = BlockPattern.OffsetsFor(DiskSize);
        var socket = run.PathFor("blk.sock");
        var image = run.PathFor("disk.img");
        var problems = new List<string>();

        await using var backend = await BlockSampleBackend.StartAsync(run, socket, image, DiskSize, Queues, serial, logLevel: BackendLogLevel);
        output.WriteLine($"[{clock.Elapsed.TotalSeconds,5:F1} s] backend pid {backend.Process.Pid}: {backend.Process.CommandLine}");

        // Boot 1: write the pattern, fdatasync, read it back, power off.
        var first = await BootAsync(run, tools, backend, "write", tag, offsets, "qemu-write", problems, clock);
        CheckDevice(first, serial, problems, "boot 1");

        // The data must be in the image on the host now, while the backend still runs (it writes through pwrite).
        var hostBad = BlockPattern.Mismatches(image, tag, offsets);
        output.WriteLine($"[{clock.Elapsed.TotalSeconds,5:F1} s] host image check after boot 1: {(hostBad.Count == 0 ? "ok" : string.Join("; ", hostBad))}");
        if (hostBad.Count > 0)
        {
            problems.Add("after boot 1 the host image does not hold the pattern: " + string.Join("; ", hostBad));
        }

        // Boot 2: a new guest on the same, still running backend process (QEMU reconnects to it) only reads.
        if (backend.Process.HasExited)
        {
            problems.Add($"the backend exited with {backend.Process.ExitCode} after the first guest disconnected (it must keep listening)");
        }
        else
        {
            var second = await BootAsync(run, tools, backend, "check", tag, offsets, "qemu-check", problems, clock);
            CheckDevice(second, serial, problems, "boot 2");
        }

        if (await CompatSampleLog.WaitForAllDisconnectedAsync(backend.LogPath, TimeSpan.FromSeconds(30), backend.Process) is { } notClosed)
        {
            problems.Add("after the last guest quit, " + notClosed);
        }

        var wasRunning = !backend.Process.HasExited;
        await backend.StopAsync();
        var requests = backend.RequestCount();
        output.WriteLine($"backend requests: {SampleNetBackend.Collapse(SampleProcess.Requests(backend.LogPath))}");
        foreach (var l in LogFile.ReadLines(backend.LogPath).Where(l => l.Contains("Frontend acked", StringComparison.Ordinal)))
        {
            output.WriteLine("backend: " + l.Trim());
        }
        output.WriteLine($"[{clock.Elapsed.TotalSeconds,5:F1} s] backend stopped: exit {backend.Process.ExitCode}, requests={requests?.ToString(CultureInfo.InvariantCulture) ?? "(not printed)"}");
        if (wasRunning && backend.Process.ExitCode != 0)
        {
            problems.Add($"the backend exited with code {backend.Process.ExitCode} on SIGTERM (expected 0)");
        }

        if (wasRunning && requests is null or 0)
        {
            problems.Add($"the backend printed no (or a zero) requests=N line on exit: {requests}");
        }

        // And after the backend process is gone, the file itself still holds every block.
        hostBad = BlockPattern.Mismatches(image, tag, offsets);
        if (hostBad.Count > 0)
        {
            problems.Add("after the backend exited the host image does not hold the pattern: " + string.Join("; ", hostBad));
        }

        if (new FileInfo(image).Length != DiskSize)
        {
            problems.Add($"image size changed: {new FileInfo(image).Length} bytes, expected {DiskSize}");
        }

        var errors = backend.ErrorEntries();
        if (errors.Count > 0)
        {
            problems.Add("backend logged errors:\n" + string.Join('\n', errors));
        }

        output.WriteLine($"[{clock.Elapsed.TotalSeconds,5:F1} s] done, {problems.Count} problem(s)");
        if (problems.Count > 0)
        {
            Assert.Fail(string.Join("\n", problems.Select(p => "* " + p)) + run.Diagnostics());
        }
    }

    private async Task<BlockGuestResult> BootAsync(
        InteropRun run, InteropTools tools, BlockSampleBackend backend, string mode, string tag, IReadOnlyList<long> offsets, string name,
        List<string> problems, Stopwatch clock)
    {
        var options = new BlockGuestOptions { SocketPath = backend.SocketPath, Mode = mode, Tag = tag, Offsets = offsets, NumQueues = Queues, Vectors = Vectors };
        await using var guest = await BlockGuest.StartAsync(run, tools, options, name);
        output.WriteLine($"[{clock.Elapsed.TotalSeconds,5:F1} s] {name}: qemu pid {guest.Process.Pid}: {guest.Process.CommandLine}");
        var done = await guest.WaitForConsoleAsync(BlockGuest.DoneLine, GuestTimeout);
        if (done is null)
        {
            var why = guest.Process.HasExited
                ? $"QEMU exited with {guest.Process.ExitCode} after {guest.Process.Elapsed.TotalSeconds:F1} s"
                : $"nothing within {GuestTimeout.TotalSeconds:F0} s";
            var init = await guest.WaitForConsoleAsync(BlockGuest.InitLine, TimeSpan.Zero) is null ? " (the guest never reached /init: stuck in SeaBIOS's virtio-blk probe?)" : string.Empty;
            Assert.Fail($"{name}: the guest never printed 'VHOSTCOMPAT: done' ({why}){init}; backend running: {!backend.Process.HasExited}{run.Diagnostics()}");
        }

        output.WriteLine($"[{clock.Elapsed.TotalSeconds,5:F1} s] {name}: guest done at guest uptime {done.Groups["uptime"].Value} s");
        if (!await guest.WaitForExitAsync(TimeSpan.FromSeconds(30)))
        {
            problems.Add($"{name}: QEMU did not exit within 30 s after the guest powered off ({guest.Observed()})");
        }

        var lines = guest.GuestLines();
        foreach (var l in lines)
        {
            output.WriteLine($"  {name}| {l}");
        }

        var verdict = guest.Verdict();
        if (verdict is null)
        {
            problems.Add($"{name}: the guest printed no verdict line");
        }
        else if (verdict.Groups["verdict"].Value != "ok" || verdict.Groups["phase"].Value != mode)
        {
            problems.Add($"{name}: guest verdict '{verdict.Value}' (mismatch lines: {string.Join(" | ", lines.Where(l => l.Contains("mismatch", StringComparison.Ordinal) || l.Contains("error", StringComparison.Ordinal)))})");
        }

        var statusEnd = lines.Select(l => BlockGuest.StatusEndLine.Match(l)).FirstOrDefault(m => m.Success);
        if (statusEnd is null || int.Parse(statusEnd.Groups["status"].Value, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture) != 0x0f)
        {
            problems.Add($"{name}: virtio status after the workload is {statusEnd?.Value ?? "(not printed)"}, expected 0x0f");
        }

        var exit = guest.Process.ExitCode;
        if (exit is not null and not 0)
        {
            problems.Add($"{name}: QEMU exited with code {exit} (124 = harness timeout, 128+N = signal N)");
        }

        var qemuErrors = guest.StderrErrorLines();
        if (qemuErrors.Count > 0)
        {
            problems.Add($"{name}: QEMU stderr has error lines:\n" + string.Join('\n', qemuErrors));
        }

        output.WriteLine($"[{clock.Elapsed.TotalSeconds,5:F1} s] {name}: QEMU exit {exit?.ToString(CultureInfo.InvariantCulture) ?? "(running)"} after {guest.Process.Elapsed.TotalSeconds:F1} s");
        return new BlockGuestResult(guest.Device(), lines);
    }

    private static void CheckDevice(BlockGuestResult result, string serial, List<string> problems, string what)
    {
        var d = result.Device;
        if (d is null)
        {
            problems.Add($"{what}: the guest printed no 'VHOSTCOMPAT: blkdev' line (no /dev/vda?): {string.Join(" | ", result.Lines)}");
            return;
        }

        if (d.Status != 0x0f)
        {
            problems.Add($"{what}: guest virtio status 0x{d.Status:x2}, expected 0x0f (ACKNOWLEDGE|DRIVER|FEATURES_OK|DRIVER_OK)");
        }

        if (d.SizeSectors != DiskSize / 512)
        {
            problems.Add($"{what}: guest capacity {d.SizeSectors} sectors, expected {DiskSize / 512}");
        }

        if (d.Serial != serial)
        {
            problems.Add($"{what}: guest serial '{d.Serial}', expected '{serial}' (GET_ID)");
        }

        if (d.ReadOnly)
        {
            problems.Add($"{what}: the guest sees a read-only disk");
        }

        if (!d.HasFeature(VirtioFVersion1) || !d.HasFeature(VirtioBlkFMq))
        {
            problems.Add($"{what}: guest features {d.FeatureBits} lack VERSION_1 (32) or MQ (12) with num-queues={Queues}");
        }

        if (d.HardwareQueues != Queues)
        {
            problems.Add($"{what}: the guest uses {d.HardwareQueues} hardware queue(s), expected {Queues} (num-queues={Queues}, {Queues} vCPUs)");
        }
    }

    private sealed record BlockGuestResult(GuestBlockDevice? Device, IReadOnlyList<string> Lines);
}
