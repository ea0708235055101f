using VhostCompat.Compat;
using VhostCompat.Protocol;

namespace VhostCompat.Tests;

/// <summary>
/// The SDK's tables against the vhost-user spec's numbering ("Protocol features" and "Front-end
/// message types" in docs/interop/vhost-user.rst). Expected names are written out by hand (here and
/// in <see cref="MessageDecoderTests.SpecNames"/>), not derived from the library.
/// </summary>
public class SpecTablesTests
{
    /// <summary>Spec names of protocol bits 0..23, without the VHOST_USER_PROTOCOL_F_ prefix, lower-cased.</summary>
    private static readonly string[] SpecProtocolNames =
    [
        "mq", "log_shmfd", "rarp", "reply_ack", "mtu", "backend_req", "cross_endian", "crypto_session",
        "pagefault", "config", "backend_send_fd", "host_notifier", "inflight_shmfd", "reset_device",
        "inband_notifications", "configure_mem_slots", "status", "xen_mmap", "shared_object", "device_state",
        "get_vring_base_inflight", "gpa_addresses", "shmem", "get_vring_base_skip_drain",
    ];

    /// <summary>The last front-end request id in the spec.</summary>
    private const uint LastSpecRequest = 45;

    [Fact]
    public void The_spec_name_table_covers_every_request_up_to_the_last_one()
    {
        // MessageDecoderTests.SpecNames pins each code's name; here: nothing is missing from it or from the enum.
        var codes = MessageDecoderTests.SpecNames.Select(row => (uint)row[0]).ToList();
        codes.Should().Equal(Enumerable.Range(1, (int)LastSpecRequest).Select(i => (uint)i));
        Enum.GetValues<FrontendRequest>().Where(r => r != FrontendRequest.None).Select(r => (uint)r).Should().Equal(codes);
    }

    [Fact]
    public void Every_request_the_spec_defines_has_a_payload_rule()
    {
        for (uint code = 1; code <= LastSpecRequest; code++)
        {
            foreach (int size in new[] { 0, 8, 40 })
            {
                PayloadRules.Validate(code, new byte[size], 0).Should().NotBe("unknown request code", $"{RequestNames.Name(code)} with {size} bytes");
            }
        }
    }

    [Fact]
    public void Every_protocol_bit_the_spec_defines_has_its_spec_name()
    {
        for (int bit = 0; bit < SpecProtocolNames.Length; bit++)
        {
            ProtocolFeatureNames.NameOf(bit).Should().Be(SpecProtocolNames[bit], $"bit {bit}");
        }
    }

    [Fact]
    public void Every_protocol_bit_the_spec_defines_has_an_enum_member()
    {
        var members = Enum.GetValues<VhostUserProtocolFeatures>().Select(v => (ulong)v).ToHashSet();
        for (int bit = 0; bit < SpecProtocolNames.Length; bit++)
        {
            members.Should().Contain(1UL << bit, $"bit {bit} ({SpecProtocolNames[bit]})");
        }

        members.Where(v => v >= 1UL << SpecProtocolNames.Length).Should().BeEmpty("no member beyond the spec's last bit");
    }

    [Theory]
    [InlineData(20, VhostUserProtocolFeatures.GetVringBaseInflight)]
    [InlineData(21, VhostUserProtocolFeatures.GpaAddresses)]
    [InlineData(22, VhostUserProtocolFeatures.Shmem)]
    [InlineData(23, VhostUserProtocolFeatures.GetVringBaseSkipDrain)]
    public void Newer_protocol_bits_have_the_spec_numbers(int bit, VhostUserProtocolFeatures feature)
    {
        ((ulong)feature).Should().Be(1UL << bit);
    }

    [Theory]
    [InlineData(24)]
    [InlineData(40)]
    [InlineData(63)]
    public void Protocol_bits_past_the_spec_print_as_bitN(int bit)
    {
        ProtocolFeatureNames.NameOf(bit).Should().Be($"bit{bit}");
    }

    [Fact]
    public void Newer_names_format_and_parse_both_ways()
    {
        ulong mask = (1UL << 20) | (1UL << 21) | (1UL << 22) | (1UL << 23) | (1UL << 24);
        string text = string.Join(',', ProtocolFeatureNames.Format(mask));
        text.Should().Be("get_vring_base_inflight,gpa_addresses,shmem,get_vring_base_skip_drain,bit24");
        ProtocolFeatureNames.TryParse(text, out ulong parsed, out string? error).Should().BeTrue(error);
        parsed.Should().Be(mask);
        ProtocolFeatureNames.TryParse("bit22", out ulong viaNumber, out _).Should().BeTrue();
        viaNumber.Should().Be(1UL << 22, "the old bitN spelling of a now-named bit still parses");
    }
}
