using VhostCompat.InteropTests.Harness;
using Xunit.Abstractions;

namespace VhostCompat.InteropTests;

/// <summary>
/// The samples against QEMU 10.0 (bookworm-backports, provisioned by .ci/provision-peers.sh) instead of Debian 12's 7.2,
/// with the same test bodies as the 7.2 tests. The devices keep MSI-X (QEMU's default vector counts): the 7.2-only TCG
/// crash with MSI-X + vhost-user (hence vectors=0 in the 7.2 tests) must not happen here. The port-1 peer of the switch
/// test is DPDK 24.11's virtio-user (Debian 13 chroot). With VHOSTCOMPAT_REQUIRE_INTEROP=1 a missing or wrong-version
/// peer fails the test; nothing falls back to QEMU 7.2 or DPDK 22.11.
/// </summary>
[Collection(QemuCollection.Name)]
[Trait("Category", "Interop")]
public sealed class Qemu10InteropTests(ITestOutputHelper output)
{
    [SkippableFact]
    public void Qemu10_and_DPDK_24_11_peers_report_their_versions()
    {
        var tools = InteropPrerequisites.RequireQemuGuest(QemuPeer.Qemu100);
        output.WriteLine($"{tools.QemuPeer!.Name}: {tools.Qemu} reports {tools.QemuVersion}; -L {string.Join(" -L ", tools.QemuPeer.DataDirs)}; QEMU_MODULE_DIR={tools.QemuPeer.ModuleDir}");
        var testpmd = InteropPrerequisites.RequireTestpmd(DpdkPeer.Dpdk2411);
        var (version, problem) = PeerCheck.DpdkVersionOf(DpdkPeer.Dpdk2411);
        output.WriteLine($"DPDK 24.11: {testpmd} reports {version}");
        problem.Should().BeNull();
    }

    /// <summary>vectors=4 is QEMU's own default for one queue pair (2 * pairs + 2), given so the 7.2 workaround is not added.</summary>
    [SkippableFact]
    public Task Qemu10_guest_reaches_DRIVER_OK_against_sample_Net_with_MSI_X() =>
        new QemuNetInteropTests(output).DriverOkAsync(
            InteropPrerequisites.RequireQemuGuest(QemuPeer.Qemu100), nameof(Qemu10_guest_reaches_DRIVER_OK_against_sample_Net_with_MSI_X), "vectors=4");

    [SkippableFact]
    public Task Qemu10_guest_pings_DPDK_24_11_virtio_user_through_the_switch()
    {
        var tools = InteropPrerequisites.RequireQemuGuest(QemuPeer.Qemu100);
        var testpmd = InteropPrerequisites.RequireTestpmd(DpdkPeer.Dpdk2411);
        return new SwitchInteropTests(output).PingDpdkThroughSwitchAsync(
            tools, testpmd, nameof(Qemu10_guest_pings_DPDK_24_11_virtio_user_through_the_switch), "vectors=4");
    }

    [SkippableFact]
    public Task Qemu10_guest_reads_random_bytes_from_sample_Rng() =>
        new RngInteropTests(output).ReadRandomBytesAsync(
            InteropPrerequisites.RequireQemuGuest(QemuPeer.Qemu100), nameof(Qemu10_guest_reads_random_bytes_from_sample_Rng), string.Empty);

    /// <summary>SIGKILL of the switch under two pinging QEMU 10.0 guests (reconnect=1), restart, replies resume.</summary>
    [SkippableFact]
    public Task Qemu10_net_backend_killed_with_SIGKILL_restarts_and_pings_resume() =>
        new CrashRecoveryInteropTests(output).KilledUnderPingAsync(
            InteropPrerequisites.RequireQemuGuest(QemuPeer.Qemu100), nameof(Qemu10_net_backend_killed_with_SIGKILL_restarts_and_pings_resume));

    /// <summary>SIGKILL of samples/Block under the guest's writers (packed ring, inflight region), restart, nothing lost.</summary>
    [SkippableFact]
    public Task Qemu10_block_backend_killed_with_SIGKILL_under_writes_loses_nothing() =>
        new BlockCrashRecoveryInteropTests(output).KilledUnderWritesAsync(
            InteropPrerequisites.RequireQemuGuest(QemuPeer.Qemu100), packedRing: true, nameof(Qemu10_block_backend_killed_with_SIGKILL_under_writes_loses_nothing));

    /// <summary>vectors=3 is QEMU's default for two queues (num-queues + 1); the backend logs at Debug for the request sequence.</summary>
    [SkippableFact]
    public Task Qemu10_block_data_written_survives_a_reboot() =>
        new BlockInteropTests(output) { Vectors = 3, BackendLogLevel = "Debug" }.WrittenDataSurvivesARebootAsync(
            InteropPrerequisites.RequireQemuGuest(QemuPeer.Qemu100), nameof(Qemu10_block_data_written_survives_a_reboot));
}
