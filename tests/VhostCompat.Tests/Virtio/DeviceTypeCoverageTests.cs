using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Tests.Virtio;

/// <summary>Every vhost-user device type QEMU has a frontend for is named, has its feature bits, and takes profiles.</summary>
public class DeviceTypeCoverageTests
{
    [Theory]
    [InlineData(VirtioDeviceType.Scsi, "hotplug", 1)]
    [InlineData(VirtioDeviceType.Scsi, "param_change", 2)]
    [InlineData(VirtioDeviceType.Gpu, "edid", 1)]
    [InlineData(VirtioDeviceType.Gpu, "context_init", 4)]
    [InlineData(VirtioDeviceType.Vsock, "seqpacket", 1)]
    [InlineData(VirtioDeviceType.Fs, "notification", 0)]
    [InlineData(VirtioDeviceType.Sound, "ctls", 0)]
    [InlineData(VirtioDeviceType.Scmi, "p2a_channels", 0)]
    [InlineData(VirtioDeviceType.Scmi, "shared_memory", 1)]
    [InlineData(VirtioDeviceType.I2c, "zero_length_request", 0)]
    [InlineData(VirtioDeviceType.Gpio, "irq", 0)]
    [InlineData(VirtioDeviceType.Crypto, "revision_1", 0)]
    [InlineData(VirtioDeviceType.Console, "multiport", 1)]
    [InlineData(VirtioDeviceType.Input, "queue_reset", 40)]
    public void Device_bits_of_every_type_map_both_ways(VirtioDeviceType type, string name, int bit)
    {
        VirtioFeatures.Find(type, name)!.Bit.Should().Be(bit);
        VirtioFeatures.NameOf(type, bit).Should().Be(name);
    }

    [Theory]
    [InlineData("net", VirtioDeviceType.Net)]
    [InlineData("blk", VirtioDeviceType.Block)]
    [InlineData("input", VirtioDeviceType.Input)]
    [InlineData("snd", VirtioDeviceType.Sound)]
    [InlineData("sound", VirtioDeviceType.Sound)]
    [InlineData("i2c", VirtioDeviceType.I2c)]
    [InlineData("gpio", VirtioDeviceType.Gpio)]
    [InlineData("scmi", VirtioDeviceType.Scmi)]
    [InlineData("vsock", VirtioDeviceType.Vsock)]
    [InlineData("fs", VirtioDeviceType.Fs)]
    [InlineData("scsi", VirtioDeviceType.Scsi)]
    [InlineData("gpu", VirtioDeviceType.Gpu)]
    public void Type_names_parse_and_print(string name, VirtioDeviceType type)
    {
        VirtioDeviceTypes.TryParse(name, out var parsed).Should().BeTrue();
        parsed.Should().Be(type);
        VirtioDeviceTypes.NameOf(type).Should().Be(VirtioDeviceTypes.Find(type)!.Name);
        CapabilityDocument.TypeName(type).Should().Be(VirtioDeviceTypes.Find(type)!.Name);
    }

    [Fact]
    public void Every_modelled_type_takes_a_default_profile_with_its_minimum_queues()
    {
        foreach (var info in VirtioDeviceTypes.All)
        {
            var profile = InterfaceProfile.Parse($"type={info.Name},version_1=on");
            profile.DeviceType.Should().Be(info.Type);
            profile.Queues.Should().Be(info.MinQueues, info.Name);
        }
    }

    [Fact]
    public void A_profile_with_a_queue_count_the_type_cannot_have_names_the_type()
    {
        var bad = () => InterfaceProfile.Parse("type=input,version_1=on,queues=3");
        bad.Should().Throw<ProfileFormatException>().WithMessage("*input device type has exactly 2 virtqueues, not 3*");
        InterfaceProfile.Parse("type=fs,version_1=on,notification=on,queues=5").Queues.Should().Be(5);
        InterfaceProfile.Parse("type=vsock,seqpacket=on,version_1=on").Features.Should().Be(VirtioFeatureBits.Version1 | (1UL << 1));
    }
}
