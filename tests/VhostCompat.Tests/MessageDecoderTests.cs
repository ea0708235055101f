using CsCheck;
using System.Buffers;
using System.Buffers.Binary;
using VhostCompat.Protocol;
using VhostCompat.Tests.Support;

namespace VhostCompat.Tests;

/// <summary>Framing over <see cref="ReadOnlySequence{T}"/> (PROTOCOL.md §1.2–1.3; HOSTILE-INPUTS A1–A3, A7).</summary>
public class MessageDecoderTests
{
    /// <summary>A hand-built SET_VRING_ADDR (9) request with NEED_REPLY: 12-byte header + 40-byte payload.</summary>
    private static byte[] SetVringAddrMessage()
    {
        var m = new byte[12 + 40];
        BinaryPrimitives.WriteUInt32LittleEndian(m, 9);
        BinaryPrimitives.WriteUInt32LittleEndian(m.AsSpan(4), 0x9);
        BinaryPrimitives.WriteUInt32LittleEndian(m.AsSpan(8), 40);
        for (int i = 12; i < m.Length; i++)
        {
            m[i] = (byte)(0x40 + i);
        }

        return m;
    }

    private static byte[] Header(uint request, uint flags, uint size)
    {
        var h = new byte[12];
        BinaryPrimitives.WriteUInt32LittleEndian(h, request);
        BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(4), flags);
        BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(8), size);
        return h;
    }

    private static void ShouldDecodeSetVringAddr(ReadOnlySequence<byte> sequence, byte[] message)
    {
        bool ok = MessageFraming.TryDecode(sequence, out MessageHeader header, out byte[] payload, out long consumed);

        ok.Should().BeTrue();
        header.Should().Be(new MessageHeader(9, 0x9, 40));
        payload.Should().Equal(message[12..]);
        consumed.Should().Be(message.Length);
    }

    [Fact]
    public void Complete_message_in_one_segment_is_decoded()
    {
        byte[] m = SetVringAddrMessage();
        ShouldDecodeSetVringAddr(new ReadOnlySequence<byte>(m), m);
    }

    [Fact]
    public void Complete_message_split_into_two_segments_at_every_position_is_decoded()
    {
        byte[] m = SetVringAddrMessage();
        for (int split = 1; split < m.Length; split++)
        {
            ShouldDecodeSetVringAddr(Sequences.SplitAt(m, split), m);
        }
    }

    [Fact]
    public void Complete_message_split_into_three_segments_at_every_pair_of_positions_is_decoded()
    {
        byte[] m = SetVringAddrMessage();
        for (int a = 1; a < m.Length - 1; a++)
        {
            for (int b = a + 1; b < m.Length; b++)
            {
                ShouldDecodeSetVringAddr(Sequences.SplitAt(m, a, b), m);
            }
        }
    }

    [Fact]
    public void Complete_message_with_one_byte_per_segment_is_decoded()
    {
        byte[] m = SetVringAddrMessage();
        ShouldDecodeSetVringAddr(Sequences.OneBytePerSegment(m), m);
    }

    [Fact]
    public void Only_the_first_of_two_back_to_back_messages_is_consumed()
    {
        byte[] first = SetVringAddrMessage();
        byte[] second = [.. Header(1, 0x1, 0)];
        byte[] both = [.. first, .. second];

        for (int split = 1; split < both.Length; split++)
        {
            ReadOnlySequence<byte> seq = Sequences.SplitAt(both, split);
            MessageFraming.TryDecode(seq, out _, out _, out long consumed).Should().BeTrue();
            consumed.Should().Be(first.Length);

            MessageFraming.TryDecode(seq.Slice(consumed), out MessageHeader h2, out byte[] p2, out long c2).Should().BeTrue();
            h2.Should().Be(new MessageHeader(1, 1, 0));
            p2.Should().BeEmpty();
            c2.Should().Be(12);
        }
    }

    [Fact]
    public void Message_without_payload_is_decoded_from_exactly_12_bytes()
    {
        byte[] m = Header(1, 0x1, 0);

        MessageFraming.TryDecode(new ReadOnlySequence<byte>(m), out MessageHeader h, out byte[] p, out long consumed).Should().BeTrue();

        h.Should().Be(new MessageHeader(1, 1, 0));
        p.Should().BeEmpty();
        consumed.Should().Be(12);
    }

    [Fact]
    public void Fewer_than_12_bytes_need_more_data()
    {
        byte[] m = SetVringAddrMessage();
        for (int n = 0; n < 12; n++)
        {
            MessageFraming.TryDecode(new ReadOnlySequence<byte>(m, 0, n), out _, out byte[] p, out long consumed)
                .Should().BeFalse($"{n} bytes are not a header");
            consumed.Should().Be(0);
            p.Should().BeEmpty();

            if (n >= 2)
            {
                MessageFraming.TryDecode(Sequences.SplitAt(m[..n], 1), out _, out _, out consumed).Should().BeFalse();
                consumed.Should().Be(0);
            }
        }
    }

    [Fact]
    public void Header_with_partial_payload_needs_more_data()
    {
        byte[] m = SetVringAddrMessage();
        for (int n = 12; n < m.Length; n++)
        {
            MessageFraming.TryDecode(new ReadOnlySequence<byte>(m, 0, n), out _, out byte[] p, out long consumed)
                .Should().BeFalse($"{n - 12} of 40 payload bytes present");
            consumed.Should().Be(0);
            p.Should().BeEmpty();

            MessageFraming.TryDecode(Sequences.SplitAt(m[..n], 6), out _, out _, out consumed).Should().BeFalse();
            consumed.Should().Be(0);
        }
    }

    [Fact]
    public void Payload_of_exactly_4096_bytes_is_accepted()
    {
        byte[] m = [.. Header(25, 0x1, 4096), .. new byte[4096]];
        m[^1] = 0x5A;

        MessageFraming.TryDecode(new ReadOnlySequence<byte>(m), out MessageHeader h, out byte[] p, out long consumed).Should().BeTrue();

        h.Size.Should().Be(4096u);
        p.Length.Should().Be(4096);
        p[^1].Should().Be(0x5A);
        consumed.Should().Be(12 + 4096);
        MessageFraming.TryDecode(new ReadOnlySequence<byte>(m, 0, m.Length - 1), out _, out _, out _).Should().BeFalse();
    }

    [Theory]
    [InlineData(0x1001u)]
    [InlineData(0x10000u)]
    [InlineData(0x7FFF_FFFFu)]
    [InlineData(0xFFFF_FFFFu)]
    public void Oversized_size_field_throws_framing_exception_from_the_header_alone(uint size)
    {
        byte[] header = Header(5, 0x1, size);

        Action decode = () => MessageFraming.TryDecode(new ReadOnlySequence<byte>(header), out _, out _, out _);

        decode.Should().Throw<VhostUserFramingException>().WithMessage($"*{size}*");
    }

    [Theory]
    [InlineData(0x1001u)]
    [InlineData(0x10000u)]
    [InlineData(0xFFFF_FFFFu)]
    public void Oversized_size_field_throws_without_allocating_the_payload(uint size)
    {
        // Even when the claimed payload bytes are all there, nothing of that size may be allocated.
        int available = (int)Math.Min(size, 0x10000u);
        byte[] bytes = [.. Header(5, 0x1, size), .. new byte[available]];
        var sequence = Sequences.SplitAt(bytes, 5, 12);

        static long Measure(ReadOnlySequence<byte> s)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            try
            {
                MessageFraming.TryDecode(s, out _, out _, out _);
            }
            catch (VhostUserFramingException)
            {
            }

            return GC.GetAllocatedBytesForCurrentThread() - before;
        }

        Measure(sequence); // warm up: first-throw costs (stack trace metadata) are not the payload
        long allocated = Measure(sequence);

        allocated.Should().BeLessThan(0x1001, "the 4 KiB limit must be checked before any payload buffer is allocated");
    }

    [Theory]
    [InlineData(0x0u)]
    [InlineData(0x2u)]
    [InlineData(0x3u)]
    [InlineData(0x8u)]   // NEED_REPLY with version 0
    [InlineData(0xAu)]   // NEED_REPLY with version 2
    [InlineData(0x7u)]   // REPLY with version 3
    public void Version_bits_other_than_1_throw_framing_exception(uint flags)
    {
        byte[] m = [.. Header(1, flags, 0)];

        Action decode = () => MessageFraming.TryDecode(new ReadOnlySequence<byte>(m), out _, out _, out _);

        decode.Should().Throw<VhostUserFramingException>().WithMessage("*version*");
    }

    [Fact]
    public void Bad_version_is_detected_from_the_header_before_the_payload_arrives()
    {
        byte[] m = Header(9, 0x2, 40);

        Action decode = () => MessageFraming.TryDecode(new ReadOnlySequence<byte>(m), out _, out _, out _);

        decode.Should().Throw<VhostUserFramingException>();
    }

    [Fact]
    public void Bad_version_detection_is_identical_across_runs()
    {
        byte[] m = Header(1, 0x3, 0);
        var messages = Enumerable.Range(0, 5).Select(run =>
        {
            try
            {
                MessageFraming.TryDecode(new ReadOnlySequence<byte>(m), out _, out _, out _);
                return "accepted";
            }
            catch (VhostUserFramingException e)
            {
                return e.Message;
            }
        }).Distinct().ToList();

        messages.Should().ContainSingle().Which.Should().NotBe("accepted");
    }

    [Theory]
    [InlineData(0x1u)]
    [InlineData(0x9u)]
    public void Request_flags_with_version_1_are_passed_through(uint flags)
    {
        byte[] m = Header(3, flags, 0);

        MessageFraming.TryDecode(new ReadOnlySequence<byte>(m), out MessageHeader h, out _, out _).Should().BeTrue();

        h.Flags.Should().Be(flags);
    }

    // ---- RequestNames ----

    public static readonly TheoryData<uint, string> SpecNames = new()
    {
        { 1, "GET_FEATURES" }, { 2, "SET_FEATURES" }, { 3, "SET_OWNER" }, { 4, "RESET_OWNER" },
        { 5, "SET_MEM_TABLE" }, { 6, "SET_LOG_BASE" }, { 7, "SET_LOG_FD" }, { 8, "SET_VRING_NUM" },
        { 9, "SET_VRING_ADDR" }, { 10, "SET_VRING_BASE" }, { 11, "GET_VRING_BASE" }, { 12, "SET_VRING_KICK" },
        { 13, "SET_VRING_CALL" }, { 14, "SET_VRING_ERR" }, { 15, "GET_PROTOCOL_FEATURES" },
        { 16, "SET_PROTOCOL_FEATURES" }, { 17, "GET_QUEUE_NUM" }, { 18, "SET_VRING_ENABLE" },
        { 19, "SEND_RARP" }, { 20, "NET_SET_MTU" }, { 21, "SET_BACKEND_REQ_FD" }, { 22, "IOTLB_MSG" },
        { 23, "SET_VRING_ENDIAN" }, { 24, "GET_CONFIG" }, { 25, "SET_CONFIG" },
        { 26, "CREATE_CRYPTO_SESSION" }, { 27, "CLOSE_CRYPTO_SESSION" }, { 28, "POSTCOPY_ADVISE" },
        { 29, "POSTCOPY_LISTEN" }, { 30, "POSTCOPY_END" }, { 31, "GET_INFLIGHT_FD" },
        { 32, "SET_INFLIGHT_FD" }, { 33, "GPU_SET_SOCKET" }, { 34, "RESET_DEVICE" }, { 35, "VRING_KICK" },
        { 36, "GET_MAX_MEM_SLOTS" }, { 37, "ADD_MEM_REG" }, { 38, "REM_MEM_REG" }, { 39, "SET_STATUS" },
        { 40, "GET_STATUS" }, { 41, "GET_SHARED_OBJECT" }, { 42, "SET_DEVICE_STATE_FD" },
        { 43, "CHECK_DEVICE_STATE" }, { 44, "GET_SHMEM_CONFIG" }, { 45, "GET_VRING_BASE_SKIP_DRAIN" },
    };

    [Theory]
    [MemberData(nameof(SpecNames))]
    public void RequestNames_gives_the_spec_name_of_each_known_code(uint code, string name)
    {
        RequestNames.Name(code).Should().Be(name);
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(46u)]
    [InlineData(0x100u)]
    [InlineData(0x1000u)]
    [InlineData(0x7FFF_FFFFu)]
    [InlineData(0x8000_0000u)]
    [InlineData(0xFFFF_FFFFu)]
    public void RequestNames_names_unknown_codes_with_their_number(uint code)
    {
        RequestNames.Name(code).Should().Contain("UNKNOWN").And.Contain(code.ToString(System.Globalization.CultureInfo.InvariantCulture));
    }

    [Fact]
    public void RequestNames_never_throws_for_any_code()
    {
        var codes = Enumerable.Range(0, 0x1_0000).Select(i => (uint)i)
            .Concat(Enumerable.Range(0, 32).Select(b => 1u << b))
            .Concat(Enumerable.Range(0, 0x100).Select(i => 0xFFFF_FFFFu - (uint)i))
            .Concat(Enumerable.Range(0, 0x100).Select(i => 0x8000_0000u + (uint)i - 0x80u));

        foreach (uint code in codes)
        {
            RequestNames.Name(code).Should().NotBeNullOrEmpty();
        }

        ((Gen<uint>)Gen.UInt).Sample(code => RequestNames.Name(code).Length > 0, iter: 10_000);
    }
}
