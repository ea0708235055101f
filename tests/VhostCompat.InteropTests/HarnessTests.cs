using VhostCompat.InteropTests.Harness;

namespace VhostCompat.InteropTests;

/// <summary>Fast checks of the harness's own parsing; they need no QEMU.</summary>
public sealed class HarnessTests
{
    [Fact]
    public void Feature_bit_string_is_bit_0_first()
    {
        VirtioNetFeatures.FromBitString("1000000000000000000000000000000010").Should().Be(1UL | (1UL << 32));
        VirtioNetFeatures.FromBitString(new string('0', 64)).Should().Be(0);
        VirtioNetFeatures.FromBitString(new string('1', 64)).Should().Be(ulong.MaxValue);
        var act = () => VirtioNetFeatures.FromBitString("10x");
        act.Should().Throw<FormatException>();
    }

    [Fact]
    public void Capabilities_json_is_parsed()
    {
        var caps = BackendCapabilities.Parse(
            """{"type":"net","features":[],"vhostcompat":{"virtio-features":"0x140008000","protocol-features":"0x10009"}}""");
        caps.Type.Should().Be("net");
        caps.VirtioFeatures.Should().Be(0x140008000UL);
        caps.ProtocolFeatures.Should().Be(0x10009UL);
    }

    [Fact]
    public void Describe_names_the_bits()
    {
        VirtioNetFeatures.Describe(0x100008000UL).Should().Be("0x100008000 (MRG_RXBUF VERSION_1)");
    }

    [Theory]
    [InlineData("fail: VhostCompat[0] boom", true)]
    [InlineData("06:33:12.123 crit: VhostCompat[0] boom", true)]
    [InlineData("2026-11-26 06:33:12 fail: x", true)]
    [InlineData("\u001b[41m\u001b[30mfail\u001b[39m\u001b[22m\u001b[49m: x", true)]
    [InlineData("06:33:12.123 info: VhostCompat[0] request GET_FEATURES", false)]
    [InlineData("06:33:12.123 dbug: VhostCompat[0] not a fail: line", false)]
    public void Backend_error_lines_are_recognised(string line, bool isError)
    {
        SampleNetBackend.IsErrorLine(line).Should().Be(isError);
    }

    [Fact]
    public void Kernels_are_ordered_by_version()
    {
        new[] { "/boot/vmlinuz-6.1.0-9-amd64", "/boot/vmlinuz-6.1.0-56-amd64", "/boot/vmlinuz-5.10.0-30-amd64" }
            .OrderByDescending(k => k, VersionAwareComparer.Instance)
            .Should().Equal("/boot/vmlinuz-6.1.0-56-amd64", "/boot/vmlinuz-6.1.0-9-amd64", "/boot/vmlinuz-5.10.0-30-amd64");
    }

    [Fact]
    public void Request_sequences_collapse_repeats()
    {
        SampleNetBackend.Collapse(["A", "B", "B", "B", "C", "A"]).Should().Be("A B x3 C A");
        SampleNetBackend.Collapse([]).Should().BeEmpty();
    }

    [Fact]
    public void Switch_port_counters_are_parsed_from_the_exit_lines()
    {
        var log = "07:01:03.364 info: VhostCompat.Backend[3] Frontend disconnected\n" +
                  "port 0: tx_packets=12 tx_bytes=1180 rx_packets=9 rx_dropped=2\r\n" +
                  "port 1: tx_packets=7 tx_bytes=700 rx_packets=11 rx_dropped=0\n";
        var counters = SwitchPortCounters.ParseAll(log);
        counters.Keys.Should().Equal(0, 1);
        counters[0].Should().Be(new SwitchPortCounters(0, 12, 1180, 9, 2));
        counters[1].Should().Be(new SwitchPortCounters(1, 7, 700, 11, 0));
        SwitchPortCounters.ParseAll("info: port 0: net rx queue of pair 0: started=True").Should().BeEmpty();
    }

    [Fact]
    public void Testpmd_forward_statistics_are_parsed()
    {
        const string stdout = """
            Telling cores to stop...
              ---------------------- Forward statistics for port 0  ----------------------
              RX-packets: 5              RX-dropped: 1             RX-total: 6
              TX-packets: 4              TX-dropped: 0             TX-total: 4
              ----------------------------------------------------------------------------

              +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++
              RX-packets: 5              RX-dropped: 1             RX-total: 6
              TX-packets: 4              TX-dropped: 0             TX-total: 4
            """;
        TestpmdPortStatistics.Parse(stdout).Should().Be(new TestpmdPortStatistics(5, 1, 4, 0));
        TestpmdPortStatistics.Parse(stdout, port: 1).Should().BeNull();
        TestpmdPortStatistics.Parse("Port 0: 52:54:00:00:00:01").Should().BeNull();
    }

    [Fact]
    public async Task External_process_output_goes_to_files_and_timeout_is_enforced()
    {
        var dir = Directory.CreateTempSubdirectory("vhostcompat-harness-").FullName;
        try
        {
            await using (var p = ExternalProcess.Start(new ExternalProcessOptions("echo", "/bin/sh", ["-c", "echo out; echo err >&2; exit 3"], dir, TimeSpan.FromSeconds(30))))
            {
                (await p.WaitForExitAsync(TimeSpan.FromSeconds(30))).Should().BeTrue();
                p.ExitCode.Should().Be(3);
                p.ReadStdout().Should().Be("out\n");
                p.ReadStderr().Should().Be("err\n");
            }

            await using (var p = ExternalProcess.Start(new ExternalProcessOptions("sleep", "/bin/sleep", ["60"], dir, TimeSpan.FromSeconds(1))))
            {
                (await p.WaitForExitAsync(TimeSpan.FromSeconds(30))).Should().BeTrue("the hard timeout must end the process");
                p.ExitCode.Should().Be(124);
            }

            await using (var p = ExternalProcess.Start(new ExternalProcessOptions("sleep2", "/bin/sleep", ["60"], dir, TimeSpan.FromSeconds(60))))
            {
                var pid = p.Pid;
                await p.DisposeAsync();
                p.HasExited.Should().BeTrue();
                File.Exists($"/proc/{pid}/status").Should().BeFalse();
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
