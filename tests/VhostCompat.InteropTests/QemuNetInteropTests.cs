using System.Globalization;
using VhostCompat.InteropTests.Harness;
using Xunit.Abstractions;
using static VhostCompat.InteropTests.Harness.VirtioNetFeatures;

namespace VhostCompat.InteropTests;

/// <summary>QEMU 7.2's virtio-net-pci with -netdev vhost-user (an unmodified frontend) against samples/Net.</summary>
[Collection(QemuCollection.Name)]
[Trait("Category", "Interop")]
public sealed class QemuNetInteropTests(ITestOutputHelper output)
{
    /// <summary>Boot to the guest's status line takes ~11-20 s under TCG; the machine is shared, so allow much more.</summary>
    private static readonly TimeSpan GuestStatusTimeout = TimeSpan.FromSeconds(
        int.TryParse(Environment.GetEnvironmentVariable("VHOSTCOMPAT_INTEROP_BOOT_TIMEOUT"), CultureInfo.InvariantCulture, out var s) ? s : 180);

    [SkippableFact]
    public Task QemuGuest_reaches_DRIVER_OK_against_sample_Net() =>
        DriverOkAsync(InteropPrerequisites.RequireQemuGuest(), nameof(QemuGuest_reaches_DRIVER_OK_against_sample_Net));

    /// <summary>The DRIVER_OK test with the QEMU build of <paramref name="tools"/> and extra virtio-net-pci properties.</summary>
    internal async Task DriverOkAsync(InteropTools tools, string runName, string netDeviceProperties = "")
    {
        var run = InteropRun.Create(runName);
        output.WriteLine($"run directory: {run.Directory}");

        var caps = await SampleNetBackend.GetCapabilitiesAsync(run);
        output.WriteLine($"backend capabilities: {caps.Json}");
        output.WriteLine($"backend offers virtio features {Describe(caps.VirtioFeatures)}, protocol features {Hex(caps.ProtocolFeatures)}");

        var socket = run.PathFor("be.sock");
        var problems = new List<string>();
        await using var backend = await SampleNetBackend.StartAsync(run, socket);

        GuestNetStatus? guestStatus;
        ulong? acked;
        int? qemuExit;
        IReadOnlyList<string> qemuErrors;
        await using (var guest = await QemuGuest.StartAsync(run, tools, new QemuGuestOptions { SocketPath = socket, NetDeviceProperties = netDeviceProperties }))
        {
            output.WriteLine($"qemu pid {guest.Process.Pid}: {guest.Process.CommandLine}");
            guestStatus = await guest.WaitForNetStatusAsync(GuestStatusTimeout);
            if (guestStatus is null)
            {
                var why = guest.Process.HasExited
                    ? $"QEMU exited with {guest.Process.ExitCode} after {guest.Process.Elapsed.TotalSeconds:F1} s"
                    : $"nothing within {GuestStatusTimeout.TotalSeconds:F0} s";
                Assert.Fail($"the guest never printed its virtio-net status line ({why}); backend requests: {backend.RequestSequence()}{run.Diagnostics()}");
            }

            output.WriteLine($"guest status line after {guestStatus.SeenAfter.TotalSeconds:F1} s: status=0x{guestStatus.Status:x2} features={guestStatus.FeatureBits}");
            acked = await backend.WaitForAckedFeaturesAsync(TimeSpan.FromSeconds(10));

            // In the default mode the guest powers off right after printing; QEMU then exits with 0 (-no-reboot).
            if (!await guest.WaitForExitAsync(TimeSpan.FromSeconds(90)))
            {
                problems.Add($"QEMU did not exit within 90 s after the guest's status line (guest poweroff expected; {guest.Observed()})");
            }

            qemuExit = guest.Process.ExitCode;
            qemuErrors = guest.StderrErrorLines();
            output.WriteLine($"QEMU exit code {qemuExit?.ToString(CultureInfo.InvariantCulture) ?? "(running)"} after {guest.Process.Elapsed.TotalSeconds:F1} s");
            foreach (var w in guest.StderrWarningLines())
            {
                output.WriteLine("QEMU: " + w);
            }
        }

        // The backend has noticed the disconnect (its log says so); then stop it gracefully.
        if (await CompatSampleLog.WaitForAllDisconnectedAsync(backend.LogPath, TimeSpan.FromSeconds(30), backend.Process) is { } notClosed)
        {
            problems.Add("after QEMU quit, " + notClosed);
        }

        if (backend.Process.HasExited && backend.Process.ExitCode != 0)
        {
            problems.Add($"the backend exited with code {backend.Process.ExitCode} before it was stopped (QEMU disconnecting must not end a listening backend)");
        }

        await backend.StopAsync();
        output.WriteLine($"backend requests: {backend.RequestSequence()}");
        foreach (var l in LogFile.ReadLines(backend.LogPath).Where(l => l.Contains("Frontend acked", StringComparison.Ordinal)))
        {
            output.WriteLine("backend: " + l.Trim());
        }

        if (guestStatus.Status != 0x0f)
        {
            problems.Add($"guest virtio status is 0x{guestStatus.Status:x2}, expected 0x0f (ACKNOWLEDGE|DRIVER|FEATURES_OK|DRIVER_OK)");
        }

        if (acked is null)
        {
            problems.Add("the backend never logged 'acked virtio features 0x...' (no SET_FEATURES seen?)");
        }
        else
        {
            // The guest can only ack what the backend offered (QEMU's own device bits aside); bit 30 (PROTOCOL_FEATURES)
            // is a vhost-user-only bit and bit 26 (LOG_ALL) is only set during migration.
            var mask = caps.VirtioFeatures & ~(Bit(VhostUserFProtocolFeatures) | Bit(VhostFLogAll));
            var guestView = guestStatus.Features & mask;
            var backendView = acked.Value & ~Bit(VhostUserFProtocolFeatures);
            output.WriteLine($"guest acked {Describe(guestStatus.Features)}");
            output.WriteLine($"backend acked {Describe(acked.Value)}");
            if (guestView != backendView)
            {
                problems.Add(
                    $"guest-acked features within the backend's offer {Describe(guestView)} != backend's acked features without bit 30 {Describe(backendView)}; " +
                    $"only in guest: {Describe(guestView & ~backendView)}, only in backend: {Describe(backendView & ~guestView)}");
            }
        }

        InteropVerdict.AddBackendAndQemuProblems(problems, backend.ErrorEntries(), qemuErrors, qemuExit);
        InteropVerdict.FailOnProblems(problems, backend.RequestSequence, run);
    }
}
