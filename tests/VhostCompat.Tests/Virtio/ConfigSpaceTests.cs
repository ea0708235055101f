using System.Text;
using VhostCompat.Virtio;

namespace VhostCompat.Tests.Virtio;

/// <summary>The config-space helpers under QEMU's access pattern: whole-config writes, reads of any range.</summary>
public class ConfigSpaceTests
{
    [Fact]
    public void A_whole_config_write_changes_only_the_writable_bytes()
    {
        var config = new ConfigSpace(24).SetU64(0, 0x1122334455667788).SetU32(20, 512).Writable(16, 1);
        var image = new byte[24];
        config.Read(0, image);
        image[16] = 1;  // the driver's write
        image[0] = 0xff; // what a frontend might write back into a read-only field
        config.Write(0, image).Should().Be(1);
        var after = new byte[24];
        config.Read(0, after);
        BitConverter.ToUInt64(after, 0).Should().Be(0x1122334455667788, "read-only bytes are ignored, not refused");
        after[16].Should().Be(1);
        config.Write(0, image).Should().Be(0, "writing the same value again changes nothing");
    }

    [Fact]
    public void Ranges_outside_the_config_space_throw()
    {
        var config = new ConfigSpace(8);
        var read = () => config.Read(4, new byte[5]);
        read.Should().Throw<ArgumentOutOfRangeException>();
        var write = () => config.Write(-1, new byte[1]);
        write.Should().Throw<ArgumentOutOfRangeException>();
        var big = () => new ConfigSpace(257);
        big.Should().Throw<ArgumentOutOfRangeException>();
    }

    private static VirtioInputConfig Keyboard() => new VirtioInputConfig()
        .Name("kbd").Serial("s1").DeviceIds(6, 1, 2, 3)
        .EventCodes(0x01, [1, 30, 127]).EventCodes(0x11, [0, 1, 2]).AbsoluteAxis(0, -5, 100, 1, 2, 3);

    private static byte[] Image(VirtioInputConfig config)
    {
        var image = new byte[VirtioInputConfig.Size];
        config.Read(0, image);
        return image;
    }

    /// <summary>QEMU rewrites all 136 bytes after the driver changes select, then reads byte by byte.</summary>
    [Fact]
    public void Select_and_subsel_written_in_a_whole_config_write_pick_the_image()
    {
        var config = Keyboard();
        var write = Image(config);
        write[0] = (byte)VirtioInputConfigSelect.EvBits;
        write[1] = 0x01;
        write[2] = 99; // size is read-only: ignored
        config.Write(0, write).Should().BeTrue();
        var image = Image(config);
        image[0].Should().Be(0x11);
        image[1].Should().Be(0x01);
        image[2].Should().Be(16, "the bitmap reaches code 127: 16 bytes");
        (image[8 + 3] & 0x40).Should().Be(0x40, "KEY_A (30) is bit 6 of byte 3");
        (image[8 + 15] & 0x80).Should().Be(0x80, "code 127");
        var one = new byte[1];
        config.Read(2, one);
        one[0].Should().Be(16, "a one-byte read at an offset sees the same image");
    }

    [Fact]
    public void Strings_ids_and_abs_info_have_the_spec_layout_and_unknown_pairs_have_size_0()
    {
        var config = Keyboard();
        config.Write(0, [(byte)VirtioInputConfigSelect.IdName, 0]);
        var image = Image(config);
        image[2].Should().Be(3);
        Encoding.ASCII.GetString(image, 8, 3).Should().Be("kbd");

        config.Write(0, [(byte)VirtioInputConfigSelect.IdDevids]);
        Image(config).AsSpan(8, 8).ToArray().Should().Equal(6, 0, 1, 0, 2, 0, 3, 0);

        config.Write(0, [(byte)VirtioInputConfigSelect.AbsInfo, 0]);
        image = Image(config);
        image[2].Should().Be(20);
        BitConverter.ToInt32(image, 8).Should().Be(-5);
        BitConverter.ToInt32(image, 24).Should().Be(3);

        config.Write(1, [0x05]); // subsel alone: ABS axis 5 is not known
        config.Subsel.Should().Be(5);
        Image(config)[2].Should().Be(0);
        config.Write(0, [(byte)VirtioInputConfigSelect.EvBits, 0x14]); // EV_REP not declared
        Image(config)[2].Should().Be(0);
    }

    [Fact]
    public void Bitmaps_refuse_codes_beyond_the_union()
    {
        var bad = () => new VirtioInputConfig().EventCodes(0x01, [1024]);
        bad.Should().Throw<ArgumentOutOfRangeException>();
        var oversized = () => new VirtioInputConfig().Set(VirtioInputConfigSelect.IdName, 0, new byte[129]);
        oversized.Should().Throw<ArgumentOutOfRangeException>();
    }
}
