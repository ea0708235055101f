using System.Globalization;
using VhostCompat.InteropTests.Harness;
using Xunit.Abstractions;
using static VhostCompat.InteropTests.Harness.VirtioNetFeatures;

namespace VhostCompat.InteropTests;

/// <summary>QEMU 7.2's vhost-user-rng-pci (an unmodified frontend) against samples/Rng running on the generic host.</summary>
[Collection(QemuCollection.Name)]
[Trait("Category", "Interop")]
public sealed class RngInteropTests(ITestOutputHelper output)
{
    /// <summary>Boot to the guest's status line takes ~10-35 s under TCG; the machine is shared, so allow much more.</summary>
    private static readonly TimeSpan GuestStatusTimeout = TimeSpan.FromSeconds(
        int.TryParse(Environment.GetEnvironmentVariable("VHOSTCOMPAT_INTEROP_BOOT_TIMEOUT"), CultureInfo.InvariantCulture, out var s) ? s : 180);

    private const int Reads = 3;
    private const int BytesPerRead = 64;

    /// <summary>
    /// The guest's virtio_rng driver reads /dev/hwrng through the sample: every read returns the bytes asked for,
    /// they are not constant and differ between reads. With MSI-X (QEMU's default) and with vectors=0 (INTx),
    /// which the net tests need under TCG; vhost-user-rng-pci works with both.
    /// </summary>
    [SkippableTheory]
    [InlineData("")]
    [InlineData("vectors=0")]
    public Task QemuGuest_reads_random_bytes_from_sample_Rng(string deviceProperties) =>
        ReadRandomBytesAsync(
            InteropPrerequisites.RequireQemuGuest(),
            nameof(QemuGuest_reads_random_bytes_from_sample_Rng) + (deviceProperties.Length > 0 ? "-" + deviceProperties : string.Empty),
            deviceProperties);

    /// <summary>The read-random-bytes test with the QEMU build of <paramref name="tools"/>.</summary>
    internal async Task ReadRandomBytesAsync(InteropTools tools, string runName, string deviceProperties)
    {
        var run = InteropRun.Create(runName);
        output.WriteLine($"run directory: {run.Directory}");
        if (!await RngQemuGuest.HasDeviceAsync(run, tools))
        {
            const string what = "this QEMU has no vhost-user-rng-pci device (qemu-system-x86_64 -device vhost-user-rng-pci,help)";
            if (InteropPrerequisites.Required)
            {
                Assert.Fail($"{InteropPrerequisites.RequireVariable} is set, but {what}");
            }

            Skip.If(true, what);
        }

        var caps = await RngSampleBackend.GetCapabilitiesAsync(run);
        output.WriteLine($"backend capabilities: {caps.Json}");
        caps.Type.Should().Be("rng");

        var socket = run.PathFor("rng.sock");
        var problems = new List<string>();
        await using var backend = await RngSampleBackend.StartAsync(run, socket);

        System.Text.RegularExpressions.Match? status, features, hwrng;
        IReadOnlyList<RngRead> reads;
        int? qemuExit;
        IReadOnlyList<string> qemuErrors;
        var options = new RngGuestOptions { SocketPath = socket, DeviceProperties = deviceProperties, Reads = Reads, BytesPerRead = BytesPerRead };
        await using (var guest = await RngQemuGuest.StartAsync(run, tools, options))
        {
            output.WriteLine($"qemu pid {guest.Process.Pid}: {guest.Process.CommandLine}");
            status = await guest.WaitForStatusAsync(GuestStatusTimeout);
            if (status is null || !status.Value.Contains("status=", StringComparison.Ordinal))
            {
                var why = status is not null ? status.Value
                    : guest.Process.HasExited ? $"QEMU exited with {guest.Process.ExitCode} after {guest.Process.Elapsed.TotalSeconds:F1} s"
                    : $"nothing within {GuestStatusTimeout.TotalSeconds:F0} s";
                Assert.Fail($"the guest never printed its virtio-rng status line ({why}); backend requests: {backend.RequestSequence()}{run.Diagnostics()}");
            }

            status = await guest.WaitForConsoleAsync(RngQemuGuest.StatusLine, TimeSpan.FromSeconds(5)); // the whole line, with the device id
            features = await guest.WaitForConsoleAsync(RngQemuGuest.FeaturesLine, TimeSpan.FromSeconds(20));
            hwrng = await guest.WaitForConsoleAsync(RngQemuGuest.HwrngLine, TimeSpan.FromSeconds(20));
            // Each read is bounded in the guest (timeout 30 s); then it powers off and QEMU exits with 0 (-no-reboot).
            if (await guest.WaitForConsoleAsync(RngQemuGuest.DoneLine, TimeSpan.FromSeconds(Reads * 40)) is null)
            {
                problems.Add($"the guest never printed its done line ({guest.Observed()})");
            }

            if (!await guest.WaitForExitAsync(TimeSpan.FromSeconds(60)))
            {
                problems.Add($"QEMU did not exit within 60 s after the guest's done line (guest poweroff expected; {guest.Observed()})");
            }

            reads = guest.Reads();
            qemuExit = guest.Process.ExitCode;
            qemuErrors = guest.StderrErrorLines();
            output.WriteLine($"QEMU exit code {qemuExit?.ToString(CultureInfo.InvariantCulture) ?? "(running)"} after {guest.Process.Elapsed.TotalSeconds:F1} s");
            foreach (var line in guest.GuestLines())
            {
                output.WriteLine("guest: " + line);
            }

            foreach (var w in guest.StderrWarningLines())
            {
                output.WriteLine("QEMU: " + w);
            }
        }

        // The backend has noticed the disconnect (its log says so); then stop it the way a service manager does (SIGTERM).
        if (await CompatSampleLog.WaitForAllDisconnectedAsync(backend.LogPath, TimeSpan.FromSeconds(30), backend.Process) is { } notClosed)
        {
            problems.Add("after QEMU quit, " + notClosed);
        }

        if (backend.Process.HasExited)
        {
            problems.Add($"the backend exited with code {backend.Process.ExitCode} before it was stopped (QEMU disconnecting must not end a listening backend)");
        }

        await backend.StopAsync();
        var backendLog = LogFile.ReadAll(backend.LogPath);
        output.WriteLine($"backend requests: {backend.RequestSequence()}");
        foreach (var l in LogFile.ReadLines(backend.LogPath).Where(l => l.Contains("Frontend acked", StringComparison.Ordinal)))
        {
            output.WriteLine("backend: " + l.Trim());
        }
        if (backend.Process.ExitCode != 0)
        {
            problems.Add($"the backend exited with code {backend.Process.ExitCode?.ToString(CultureInfo.InvariantCulture) ?? "(still running)"} after SIGTERM, expected 0");
        }

        if (!backendLog.Contains("vhost-user backend (default) stopped", StringComparison.Ordinal))
        {
            problems.Add("the backend did not log a graceful stop ('vhost-user backend (default) stopped') after SIGTERM");
        }

        if (File.Exists(socket))
        {
            problems.Add($"the backend left its socket file {socket} behind");
        }

        if (status is null)
        {
            problems.Add("the guest's status line has no device id");
        }
        else
        {
            var st = int.Parse(status.Groups["status"].Value, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);
            if (st != 0x0f)
            {
                problems.Add($"guest virtio status is 0x{st:x2}, expected 0x0f (ACKNOWLEDGE|DRIVER|FEATURES_OK|DRIVER_OK)");
            }

            if (status.Groups["device"].Value != "0x0004")
            {
                problems.Add($"guest device id is {status.Groups["device"].Value}, expected 0x0004 (entropy source)");
            }
        }

        if (hwrng is null || !hwrng.Groups["current"].Value.StartsWith("virtio_rng", StringComparison.Ordinal))
        {
            problems.Add($"/sys/class/misc/hw_random/rng_current is not virtio_rng: {hwrng?.Value ?? "(no hwrng line)"}");
        }

        var acked = backend.LastAckedFeatures();
        if (acked is null || features is null)
        {
            problems.Add("no acked features: " + (acked is null ? "the backend never logged 'acked virtio features 0x...'" : "the guest printed no features line"));
        }
        else
        {
            var guestFeatures = FromBitString(features.Groups["bits"].Value);
            var mask = caps.VirtioFeatures & ~(Bit(VhostUserFProtocolFeatures) | Bit(VhostFLogAll));
            output.WriteLine($"guest acked {Describe(guestFeatures)}; backend acked {Describe(acked.Value)}; offered {Describe(caps.VirtioFeatures)}");
            if ((guestFeatures & mask) != (acked.Value & ~Bit(VhostUserFProtocolFeatures)))
            {
                problems.Add($"guest-acked features within the offer {Describe(guestFeatures & mask)} != backend's acked features {Describe(acked.Value)}");
            }

            if ((guestFeatures & Bit(32)) == 0)
            {
                problems.Add("the guest did not ack VERSION_1");
            }
        }

        if (reads.Count != Reads)
        {
            problems.Add($"the guest printed {reads.Count} reads of /dev/hwrng, expected {Reads}");
        }

        foreach (var r in reads)
        {
            if (r.Count != BytesPerRead || r.Bytes.Length != BytesPerRead)
            {
                problems.Add($"read {r.Number} returned {r.Count} bytes ({r.Bytes.Length} parsed), expected {BytesPerRead}");
            }
            else if (r.Bytes.All(b => b == r.Bytes[0]))
            {
                problems.Add($"read {r.Number} returned {BytesPerRead} equal bytes (0x{r.Bytes[0]:x2}): not random");
            }
            else if (r.Bytes.Distinct().Count() < BytesPerRead / 4)
            {
                problems.Add($"read {r.Number} has only {r.Bytes.Distinct().Count()} distinct byte values in {BytesPerRead}: not random");
            }
        }

        if (reads.Select(r => Convert.ToHexString(r.Bytes)).Distinct().Count() != reads.Count)
        {
            problems.Add("two reads returned the same bytes");
        }

        InteropVerdict.AddBackendAndQemuProblems(problems, backend.ErrorEntries(), qemuErrors, qemuExit);
        InteropVerdict.FailOnProblems(problems, backend.RequestSequence, run);
    }
}
