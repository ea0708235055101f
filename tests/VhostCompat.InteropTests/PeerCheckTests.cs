using VhostCompat.InteropTests.Harness;

namespace VhostCompat.InteropTests;

/// <summary>
/// A peer that is missing or reports another version is refused with the reason, never replaced by another build
/// (issue 16, bad input). Fake executables stand in for QEMU and testpmd; no guest is booted.
/// </summary>
public sealed class PeerCheckTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vcpeers").FullName;

    [Fact]
    public void A_QEMU_of_another_version_is_refused_with_both_versions()
    {
        var fake = Script("qemu", "echo 'QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)'");
        var (version, problem) = PeerCheck.QemuVersionOf(new QemuPeer("QEMU 10.0", fake, [], null, "10.0", "unused"));
        version.Should().Be("7.2.22");
        problem.Should().Be($"QEMU 10.0: {fake} is QEMU 7.2.22, expected 10.0.x");
    }

    [Fact]
    public void A_missing_QEMU_names_the_path_and_how_to_provision_it()
    {
        var missing = Path.Combine(_dir, "no-such-qemu");
        PeerCheck.QemuVersionOf(new QemuPeer("QEMU 10.0", missing, [], null, "10.0", "run .ci/provision-peers.sh")).Problem
            .Should().Be($"QEMU 10.0: {missing} does not exist (run .ci/provision-peers.sh)");
        PeerCheck.QemuVersionOf(new QemuPeer("QEMU 10.0", null, [], null, "10.0", "not provisioned")).Problem.Should().Be("not provisioned");
    }

    [Fact]
    public void A_binary_that_prints_no_version_is_refused_with_what_it_printed()
    {
        var fake = Script("qemu", "echo 'segmentation fault' >&2; exit 139");
        var (version, problem) = PeerCheck.QemuVersionOf(new QemuPeer("QEMU 10.0", fake, [], null, "10.0", "unused"));
        version.Should().BeNull();
        problem.Should().Contain("printed no 'QEMU emulator version' line").And.Contain("segmentation fault");
    }

    [Fact]
    public void A_testpmd_of_another_DPDK_is_refused()
    {
        var fake = Script("testpmd", "echo \"EAL: RTE Version: 'DPDK 22.11.11'\"");
        var (version, problem) = PeerCheck.DpdkVersionOf(new DpdkPeer("DPDK 24.11", fake, "24.11", "unused"));
        version.Should().Be("22.11.11");
        problem.Should().Be($"DPDK 24.11: {fake} is DPDK 22.11.11, expected 24.11.x");
    }

    [Fact]
    public void A_version_series_is_matched_whole_not_as_a_prefix()
    {
        var fake = Script("qemu", "echo 'QEMU emulator version 10.00.1'");
        PeerCheck.QemuVersionOf(new QemuPeer("QEMU 10.0", fake, [], null, "10.0", "unused")).Problem.Should().Contain("expected 10.0.x");
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Script(string name, string body)
    {
        var path = Path.Combine(_dir, name);
        File.WriteAllText(path, "#!/bin/sh\n" + body + "\n");
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }

        return path;
    }
}
