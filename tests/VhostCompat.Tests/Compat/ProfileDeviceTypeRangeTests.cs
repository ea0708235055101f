using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Tests.Compat;

/// <summary>
/// Found by the compat fuzz target: <c>InterfaceProfile.Parse(values, (VirtioDeviceType)0xFFFF)</c>
/// accepted a device type outside 1..255 and produced a profile whose canonical form
/// (<c>type=65535,...</c>) its own parser rejects. Profiles are now limited to the ids the text form
/// can express, whichever way they are built.
/// </summary>
public sealed class ProfileDeviceTypeRangeTests
{
    [Theory]
    [InlineData(0u)]
    [InlineData(256u)]
    [InlineData(0xFFFFu)]
    public void Device_type_outside_1_to_255_is_rejected_naming_the_type_key(uint type)
    {
        var parse = () => InterfaceProfile.Parse("version_1=on", (VirtioDeviceType)type);
        parse.Should().Throw<ProfileFormatException>().Which.Key.Should().Be("type");
        var construct = () => new InterfaceProfile((VirtioDeviceType)type, 0, 256, 1);
        construct.Should().Throw<ProfileFormatException>().Which.Key.Should().Be("type");
    }

    [Theory]
    [InlineData(1u)]
    [InlineData(42u)]
    [InlineData(255u)]
    public void Profile_for_any_valid_device_type_survives_its_canonical_form(uint type)
    {
        var p = InterfaceProfile.Parse("version_1=on", (VirtioDeviceType)type);
        InterfaceProfile.Parse(p.Canonical, p.DeviceType).SameInterface(p).Should().BeTrue(p.Canonical);
    }
}
