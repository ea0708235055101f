using VhostCompat.Virtio;

namespace VhostCompat.Tests.Compat;

/// <summary>The tool takes every modelled device type: features, profiles, the preflight against a document.</summary>
public class DeviceTypeCliTests
{
    [Fact]
    public async Task Features_decode_names_the_bits_of_every_type()
    {
        foreach (var info in VirtioDeviceTypes.All)
        {
            var (code, output, err) = await CliTests.Run("features", "decode", "--type", info.Name, "0x100000001");
            code.Should().Be(0, $"{info.Name}: {err}");
            output.Should().Contain("version_1", info.Name);
        }

        var (c, o, _) = await CliTests.Run("features", "decode", "--type", "snd", "0x1");
        c.Should().Be(0);
        o.Should().StartWith("0x1 = ctls");
    }

    [Fact]
    public async Task Profile_format_fills_the_queue_count_of_the_type_and_an_unknown_type_is_refused()
    {
        var (code, output, _) = await CliTests.Run("profile", "format", "version_1=on", "--type", "input");
        code.Should().Be(0);
        output.Should().Contain("type=input").And.Contain("queues=2");

        (code, output, _) = await CliTests.Run("profile", "format", "version_1=on", "--type", "vsock");
        code.Should().Be(0);
        output.Should().Contain("queues=3");

        var (bad, _, err) = await CliTests.Run("profile", "format", "version_1=on", "--type", "video");
        bad.Should().Be(2);
        err.Should().Contain("video");
    }
}
