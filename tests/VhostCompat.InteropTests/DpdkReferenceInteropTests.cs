using VhostCompat.InteropTests.Harness;
using Xunit.Abstractions;
using static VhostCompat.InteropTests.Harness.VirtioNetFeatures;

namespace VhostCompat.InteropTests;

/// <summary>
/// Reference run with no code of ours in it: QEMU against DPDK's vhost PMD. When this passes and the sample tests
/// fail, the difference is in our backend, not in QEMU, the kernel or the guest image.
/// </summary>
[Collection(QemuCollection.Name)]
[Trait("Category", "Interop")]
public sealed class DpdkReferenceInteropTests(ITestOutputHelper output)
{
    [SkippableFact]
    public async Task QemuGuest_pings_through_DPDK_vhost_PMD_reference_backend()
    {
        var tools = InteropPrerequisites.RequireQemuGuest();
        var testpmd = DpdkVhostBackend.TestpmdPath;
        if (testpmd is null)
        {
            if (InteropPrerequisites.Required)
            {
                Assert.Fail($"{InteropPrerequisites.RequireVariable} is set, but dpdk-testpmd is missing (apt-get install dpdk dpdk-dev)");
            }

            Skip.If(true, "dpdk-testpmd missing (apt-get install dpdk dpdk-dev)");
        }

        var run = InteropRun.Create(nameof(QemuGuest_pings_through_DPDK_vhost_PMD_reference_backend));
        output.WriteLine($"run directory: {run.Directory}");
        var socket = run.PathFor("dpdk.sock");
        await using var dpdk = await DpdkVhostBackend.StartAsync(run, testpmd!, socket);
        var options = new QemuGuestOptions { SocketPath = socket };
        options.GuestParameters["mode"] = "ping";
        options.GuestParameters["ip"] = "10.0.0.2/24";
        options.GuestParameters["peer"] = "10.0.0.1";
        await using var guest = await QemuGuest.StartAsync(run, tools, options);

        var status = await guest.WaitForNetStatusAsync(TimeSpan.FromSeconds(180));
        if (status is null)
        {
            Assert.Fail($"the guest never printed its virtio-net status line ({guest.Observed()})" + run.Diagnostics());
        }

        output.WriteLine($"guest status 0x{status.Status:x2} after {status.SeenAfter.TotalSeconds:F1} s, acked {Describe(status.Features)}");
        var ping = await guest.WaitForConsoleAsync(new(@"VHOSTCOMPAT: ping transmitted=(?<tx>\d+) received=(?<rx>\d+)"), TimeSpan.FromSeconds(60));
        var exited = await guest.WaitForExitAsync(TimeSpan.FromSeconds(60));
        output.WriteLine($"vhost-user requests seen by DPDK: {SampleNetBackend.Collapse(dpdk.Requests())}");

        var diag = run.Diagnostics();
        status.Status.Should().Be(0x0f, "the guest must reach DRIVER_OK{0}", diag);
        ping.Should().NotBeNull("the guest pings 10.0.0.1 and prints the result{0}", diag);
        int.Parse(ping!.Groups["rx"].Value, System.Globalization.CultureInfo.InvariantCulture).Should().BeGreaterThan(0, "DPDK icmpecho answers pings{0}", diag);
        exited.Should().BeTrue("the guest powers off and QEMU exits{0}", diag);
        guest.Process.ExitCode.Should().Be(0, "{0}", diag);
        guest.StderrErrorLines().Should().BeEmpty("{0}", diag);
    }
}
