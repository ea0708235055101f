using System.Buffers.Binary;
using VhostCompat.Protocol;

namespace VhostCompat.Tests;

/// <summary>
/// Syntactic rules per front-end request (PROTOCOL.md §3.1 and §12.3; HOSTILE-INPUTS A4–A6, A11,
/// A12, A16, A19, B1–B3). The expected sizes and fd counts are written out here from the spec table,
/// not taken from the library's constants.
/// </summary>
public class PayloadRulesTests
{
    /// <summary>Requests with one fixed payload size and one fixed fd count (spec §3.1).</summary>
    public static readonly TheoryData<uint, int, int> FixedRules = new()
    {
        { 1, 0, 0 },   // GET_FEATURES
        { 2, 8, 0 },   // SET_FEATURES u64
        { 3, 0, 0 },   // SET_OWNER
        { 4, 0, 0 },   // RESET_OWNER
        { 6, 16, 1 },  // SET_LOG_BASE: 16-byte log description + shm fd
        { 7, 0, 1 },   // SET_LOG_FD
        { 8, 8, 0 },   // SET_VRING_NUM vring state
        { 9, 40, 0 },  // SET_VRING_ADDR
        { 10, 8, 0 },  // SET_VRING_BASE
        { 11, 8, 0 },  // GET_VRING_BASE
        { 15, 0, 0 },  // GET_PROTOCOL_FEATURES
        { 16, 8, 0 },  // SET_PROTOCOL_FEATURES
        { 17, 0, 0 },  // GET_QUEUE_NUM
        { 18, 8, 0 },  // SET_VRING_ENABLE
        { 19, 8, 0 },  // SEND_RARP
        { 20, 8, 0 },  // NET_SET_MTU
        { 21, 0, 1 },  // SET_BACKEND_REQ_FD
        { 22, 32, 0 }, // IOTLB_MSG (sizeof with tail padding)
        { 23, 8, 0 },  // SET_VRING_ENDIAN
        { 27, 8, 0 },  // CLOSE_CRYPTO_SESSION u64 session id
        { 28, 0, 0 },  // POSTCOPY_ADVISE
        { 29, 0, 0 },  // POSTCOPY_LISTEN
        { 30, 0, 0 },  // POSTCOPY_END
        { 31, 24, 0 }, // GET_INFLIGHT_FD
        { 32, 24, 1 }, // SET_INFLIGHT_FD
        { 33, 0, 1 },  // GPU_SET_SOCKET
        { 34, 0, 0 },  // RESET_DEVICE
        { 35, 8, 0 },  // VRING_KICK vring state
        { 36, 0, 0 },  // GET_MAX_MEM_SLOTS
        { 37, 40, 1 }, // ADD_MEM_REG single region, exactly 1 fd
        { 39, 8, 0 },  // SET_STATUS
        { 40, 0, 0 },  // GET_STATUS
        { 41, 16, 0 }, // GET_SHARED_OBJECT UUID
        { 42, 8, 1 },  // SET_DEVICE_STATE_FD
        { 43, 0, 0 },  // CHECK_DEVICE_STATE
        { 44, 0, 0 },  // GET_SHMEM_CONFIG
        { 45, 8, 0 },  // GET_VRING_BASE_SKIP_DRAIN vring state
    };

    /// <summary>Requests with rules of their own, tested separately below.</summary>
    private static readonly uint[] SpecialRules =
    [
        5,  // SET_MEM_TABLE
        12, // SET_VRING_KICK
        13, // SET_VRING_CALL
        14, // SET_VRING_ERR
        24, // GET_CONFIG
        25, // SET_CONFIG
        26, // CREATE_CRYPTO_SESSION (device-specific payload)
        38, // REM_MEM_REG (0 or 1 fd)
    ];

    private static string? Validate(uint code, int size, int fds, bool xen = false) =>
        PayloadRules.Validate(code, new byte[size], fds, xen);

    [Fact]
    public void Every_FrontendRequest_value_has_a_rule_in_this_test_table()
    {
        var covered = FixedRules.Select(row => (uint)row[0]).Concat(SpecialRules).ToHashSet();

        var missing = Enum.GetValues<FrontendRequest>()
            .Where(r => r != FrontendRequest.None && !covered.Contains((uint)r))
            .ToList();

        missing.Should().BeEmpty("every request the SDK knows must have its size/fd rule pinned here");
    }

    [Theory]
    [MemberData(nameof(FixedRules))]
    public void Fixed_size_request_with_exact_size_and_fd_count_is_accepted(uint code, int size, int fds)
    {
        Validate(code, size, fds).Should().BeNull($"{RequestNames.Name(code)} with {size} bytes and {fds} fds is well-formed");
    }

    [Theory]
    [MemberData(nameof(FixedRules))]
    public void Fixed_size_request_with_one_byte_too_many_is_rejected(uint code, int size, int fds)
    {
        Validate(code, size + 1, fds).Should().NotBeNull();
    }

    [Theory]
    [MemberData(nameof(FixedRules))]
    public void Fixed_size_request_with_one_byte_too_few_is_rejected(uint code, int size, int fds)
    {
        if (size == 0)
        {
            return; // no smaller size exists
        }

        Validate(code, size - 1, fds).Should().NotBeNull();
    }

    [Theory]
    [MemberData(nameof(FixedRules))]
    public void Fixed_size_request_with_empty_payload_is_rejected_unless_it_takes_none(uint code, int size, int fds)
    {
        if (size == 0)
        {
            return;
        }

        Validate(code, 0, fds).Should().NotBeNull();
        Validate(code, 4, fds).Should().NotBeNull("A4: size 4 is never a valid struct here");
    }

    [Theory]
    [MemberData(nameof(FixedRules))]
    public void Fixed_size_request_with_one_fd_too_many_is_rejected(uint code, int size, int fds)
    {
        Validate(code, size, fds + 1).Should().NotBeNull("A11/A12: fds on a request that takes fewer");
        Validate(code, size, 8).Should().NotBeNull();
    }

    [Theory]
    [MemberData(nameof(FixedRules))]
    public void Fixed_size_request_missing_its_fd_is_rejected(uint code, int size, int fds)
    {
        if (fds == 0)
        {
            return;
        }

        Validate(code, size, fds - 1).Should().NotBeNull("A12: a request that needs an fd arrived without one");
    }

    [Fact]
    public void Validate_reports_a_reason_that_names_the_sizes()
    {
        Validate(8, 7, 0).Should().Contain("7").And.Contain("8");
    }

    // ---- SET_VRING_KICK / CALL / ERR ----

    private static byte[] Word(ulong value)
    {
        var b = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(b, value);
        return b;
    }

    [Theory]
    [InlineData(12u)]
    [InlineData(13u)]
    [InlineData(14u)]
    public void VringFile_request_with_no_fd_flag_and_no_fd_is_accepted(uint code)
    {
        foreach (ulong index in new ulong[] { 0, 1, 0x7F, 0xFF })
        {
            PayloadRules.Validate(code, Word(0x100 | index), 0).Should().BeNull();
        }
    }

    [Theory]
    [InlineData(12u)]
    [InlineData(13u)]
    [InlineData(14u)]
    public void VringFile_request_without_no_fd_flag_and_one_fd_is_accepted(uint code)
    {
        foreach (ulong index in new ulong[] { 0, 1, 0x7F, 0xFF })
        {
            PayloadRules.Validate(code, Word(index), 1).Should().BeNull();
        }
    }

    [Theory]
    [InlineData(12u)]
    [InlineData(13u)]
    [InlineData(14u)]
    public void VringFile_request_with_no_fd_flag_but_an_fd_is_rejected(uint code)
    {
        PayloadRules.Validate(code, Word(0x100), 1).Should().NotBeNull();
    }

    [Theory]
    [InlineData(12u)]
    [InlineData(13u)]
    [InlineData(14u)]
    public void VringFile_request_without_no_fd_flag_and_without_fd_is_rejected(uint code)
    {
        PayloadRules.Validate(code, Word(0), 0).Should().NotBeNull();
    }

    [Theory]
    [InlineData(12u)]
    [InlineData(13u)]
    [InlineData(14u)]
    public void VringFile_request_with_two_fds_is_rejected(uint code)
    {
        PayloadRules.Validate(code, Word(0), 2).Should().NotBeNull();
        PayloadRules.Validate(code, Word(0x100), 2).Should().NotBeNull();
    }

    [Theory]
    [InlineData(12u)]
    [InlineData(13u)]
    [InlineData(14u)]
    public void VringFile_request_with_any_reserved_bit_9_to_63_is_rejected(uint code)
    {
        for (int bit = 9; bit < 64; bit++)
        {
            ulong reserved = 1UL << bit;
            PayloadRules.Validate(code, Word(reserved), 1).Should().NotBeNull($"bit {bit} is reserved");
            PayloadRules.Validate(code, Word(reserved | 0x100), 0).Should().NotBeNull($"bit {bit} is reserved");
        }

        PayloadRules.Validate(code, Word(ulong.MaxValue), 0).Should().NotBeNull();
    }

    [Theory]
    [InlineData(12u)]
    [InlineData(13u)]
    [InlineData(14u)]
    public void VringFile_request_with_wrong_payload_size_is_rejected(uint code)
    {
        foreach (int size in new[] { 0, 4, 7, 9, 16 })
        {
            var p = new byte[size];
            if (size >= 2)
            {
                p[1] = 0x01; // no-fd flag if it were read as a word
            }

            PayloadRules.Validate(code, p, 0).Should().NotBeNull($"size {size}");
            PayloadRules.Validate(code, p, 1).Should().NotBeNull($"size {size}");
        }
    }

    // ---- SET_MEM_TABLE ----

    private static byte[] MemTable(uint count, int regionsPresent, int regionSize = 32)
    {
        var b = new byte[8 + (regionsPresent * regionSize)];
        BinaryPrimitives.WriteUInt32LittleEndian(b, count);
        return b;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(8)]
    public void SetMemTable_with_one_to_eight_regions_and_one_fd_each_is_accepted(int n)
    {
        PayloadRules.Validate(5, MemTable((uint)n, n), n).Should().BeNull();
    }

    [Fact]
    public void SetMemTable_with_zero_regions_is_rejected()
    {
        PayloadRules.Validate(5, MemTable(0, 0), 0).Should().NotBeNull("B1: REJECT is the recommended outcome");
    }

    [Fact]
    public void SetMemTable_with_nine_regions_is_rejected()
    {
        PayloadRules.Validate(5, MemTable(9, 9), 9).Should().NotBeNull("B2: at most 8 regions (VHOST_MEMORY_BASELINE_NREGIONS)");
        PayloadRules.Validate(5, MemTable(9, 8), 8).Should().NotBeNull();
    }

    [Fact]
    public void SetMemTable_claiming_0xFFFFFFFF_regions_is_rejected_without_overflow()
    {
        PayloadRules.Validate(5, MemTable(0xFFFF_FFFF, 0), 0).Should().NotBeNull();
        PayloadRules.Validate(5, MemTable(0xFFFF_FFFF, 1), 1).Should().NotBeNull();
        PayloadRules.Validate(5, MemTable(0xFFFF_FFFF, 127), 8).Should().NotBeNull("a maximal 4072-byte payload");
        PayloadRules.Validate(5, MemTable(0x8000_0000, 1), 1).Should().NotBeNull("a count that is negative as int");
        PayloadRules.Validate(5, MemTable(0x0800_0001, 1), 1).Should().NotBeNull("a count whose 32*n wraps to 32 as int");
    }

    [Theory]
    [InlineData(2, 1, 2)]  // payload holds one region fewer than counted
    [InlineData(2, 3, 2)]  // payload holds one region more than counted
    [InlineData(1, 8, 1)]  // payload holds the maximum but count says 1
    public void SetMemTable_whose_payload_size_does_not_match_the_count_is_rejected(int count, int present, int fds)
    {
        PayloadRules.Validate(5, MemTable((uint)count, present), fds).Should().NotBeNull();
    }

    [Fact]
    public void SetMemTable_with_trailing_or_missing_bytes_is_rejected()
    {
        byte[] exact = MemTable(2, 2);
        PayloadRules.Validate(5, exact.Concat(new byte[1]).ToArray(), 2).Should().NotBeNull();
        PayloadRules.Validate(5, exact.AsSpan(0, exact.Length - 1), 2).Should().NotBeNull();
    }

    [Theory]
    [InlineData(2, 0)]
    [InlineData(2, 1)]
    [InlineData(2, 3)]
    [InlineData(8, 7)]
    [InlineData(1, 2)]
    public void SetMemTable_whose_fd_count_does_not_match_the_count_is_rejected(int count, int fds)
    {
        PayloadRules.Validate(5, MemTable((uint)count, count), fds).Should().NotBeNull("B3: fd count must equal nregions");
    }

    [Theory]
    [InlineData(0)]
    [InlineData(4)]
    [InlineData(7)]
    public void SetMemTable_shorter_than_its_header_is_rejected(int size)
    {
        PayloadRules.Validate(5, new byte[size], 0).Should().NotBeNull();
    }

    [Fact]
    public void SetMemTable_with_xen_mmap_uses_40_byte_regions()
    {
        PayloadRules.Validate(5, MemTable(2, 2, regionSize: 40), 2, xenMmap: true).Should().BeNull();
        PayloadRules.Validate(5, MemTable(2, 2, regionSize: 32), 2, xenMmap: true).Should().NotBeNull();
        PayloadRules.Validate(5, MemTable(2, 2, regionSize: 40), 2, xenMmap: false).Should().NotBeNull();
    }

    // ---- ADD_MEM_REG / REM_MEM_REG ----

    [Theory]
    [InlineData(0)]
    [InlineData(2)]
    [InlineData(8)]
    public void AddMemReg_requires_exactly_one_fd(int fds)
    {
        Validate(37, 40, fds).Should().NotBeNull();
        Validate(37, 40, 1).Should().BeNull();
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    public void RemMemReg_with_zero_or_one_fd_is_accepted(int fds)
    {
        Validate(38, 40, fds).Should().BeNull("old front-ends attach the region's fd; it is tolerated and closed");
    }

    [Theory]
    [InlineData(40, 2)]
    [InlineData(0, 0)]
    [InlineData(32, 0)]
    [InlineData(39, 0)]
    [InlineData(41, 0)]
    [InlineData(39, 1)]
    public void RemMemReg_with_bad_size_or_more_than_one_fd_is_rejected(int size, int fds)
    {
        Validate(38, size, fds).Should().NotBeNull();
    }

    // ---- GET_CONFIG / SET_CONFIG ----

    private static byte[] Config(uint offset, uint size, uint flags, int dataLength)
    {
        var b = new byte[12 + dataLength];
        BinaryPrimitives.WriteUInt32LittleEndian(b, offset);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), size);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(8), flags);
        return b;
    }

    [Theory]
    [InlineData(24u, 1u)]
    [InlineData(25u, 1u)]
    [InlineData(24u, 24u)]
    [InlineData(25u, 60u)]
    [InlineData(24u, 256u)]
    [InlineData(25u, 256u)]
    public void Config_request_with_payload_of_12_plus_size_is_accepted(uint code, uint size)
    {
        PayloadRules.Validate(code, Config(0, size, 0, (int)size), 0).Should().BeNull();
    }

    [Theory]
    [InlineData(24u)]
    [InlineData(25u)]
    public void Config_request_with_size_0_is_rejected(uint code)
    {
        PayloadRules.Validate(code, Config(0, 0, 0, 0), 0).Should().NotBeNull("A19: size 0");
    }

    [Theory]
    [InlineData(24u, 257u)]
    [InlineData(25u, 257u)]
    [InlineData(24u, 4084u)]
    public void Config_request_with_size_above_256_is_rejected(uint code, uint size)
    {
        PayloadRules.Validate(code, Config(0, size, 0, (int)size), 0).Should().NotBeNull("A19: larger than any config space");
    }

    [Theory]
    [InlineData(24u, 0xFFFF_FFFFu, 0)]
    [InlineData(25u, 0xFFFF_FFF4u, 0)]  // 12 + size wraps to 0 in u32 arithmetic
    [InlineData(25u, 0xFFFF_FFF5u, 1)]  // 12 + size wraps to 1
    public void Config_request_with_huge_size_field_is_rejected_without_wrapping(uint code, uint size, int dataLength)
    {
        PayloadRules.Validate(code, Config(0, size, 0, dataLength), 0).Should().NotBeNull();
    }

    [Theory]
    [InlineData(24u, 8u, 7)]
    [InlineData(24u, 8u, 9)]
    [InlineData(25u, 8u, 0)]
    [InlineData(25u, 1u, 2)]
    [InlineData(25u, 256u, 255)]
    public void Config_request_whose_payload_differs_from_12_plus_size_is_rejected(uint code, uint size, int dataLength)
    {
        PayloadRules.Validate(code, Config(0, size, 0, dataLength), 0).Should().NotBeNull("A19: payload length ≠ size");
    }

    [Theory]
    [InlineData(24u, 0)]
    [InlineData(24u, 11)]
    [InlineData(25u, 4)]
    [InlineData(25u, 11)]
    public void Config_request_shorter_than_its_header_is_rejected(uint code, int size)
    {
        PayloadRules.Validate(code, new byte[size], 0).Should().NotBeNull();
    }

    [Theory]
    [InlineData(24u)]
    [InlineData(25u)]
    public void Config_request_with_an_fd_is_rejected(uint code)
    {
        PayloadRules.Validate(code, Config(0, 8, 0, 8), 1).Should().NotBeNull();
    }

    // ---- CREATE_CRYPTO_SESSION (device-specific payload: only the fd rule is generic) ----

    [Fact]
    public void CreateCryptoSession_with_an_fd_is_rejected()
    {
        Validate(26, 64, 1).Should().NotBeNull();
    }

    // ---- unknown codes ----

    [Theory]
    [InlineData(0u)]
    [InlineData(46u)]           // first code after GET_VRING_BASE_SKIP_DRAIN
    [InlineData(47u)]
    [InlineData(0xFFu)]
    [InlineData(0x105u)]        // SET_MEM_TABLE if narrowed to a byte
    [InlineData(0x1000u)]
    [InlineData(0x1_0009u)]     // SET_VRING_ADDR if narrowed to 16 bits
    [InlineData(0x7FFF_FFFFu)]
    [InlineData(0x8000_0001u)]  // GET_FEATURES with the sign bit set
    [InlineData(0xFFFF_FFFFu)]
    public void Unknown_request_code_is_rejected_whatever_it_carries(uint code)
    {
        foreach (int size in new[] { 0, 8, 40 })
        {
            foreach (int fds in new[] { 0, 1, 3 })
            {
                Validate(code, size, fds).Should().NotBeNull($"code 0x{code:x}, {size} bytes, {fds} fds");
            }
        }
    }

    // ---- HasOwnReply ----

    /// <summary>Requests whose normal reply is the only reply (spec §3.1 "reply" column, §3.3).</summary>
    private static readonly FrontendRequest[] OwnReply =
    [
        FrontendRequest.GetFeatures, FrontendRequest.GetProtocolFeatures, FrontendRequest.GetQueueNum,
        FrontendRequest.GetVringBase, FrontendRequest.GetConfig, FrontendRequest.GetInflightFd,
        FrontendRequest.GetMaxMemSlots, FrontendRequest.GetStatus, FrontendRequest.GetSharedObject,
        FrontendRequest.IotlbMsg, FrontendRequest.PostcopyAdvise, FrontendRequest.PostcopyListen,
        FrontendRequest.PostcopyEnd, FrontendRequest.CreateCryptoSession, FrontendRequest.SetDeviceStateFd,
        FrontendRequest.CheckDeviceState, FrontendRequest.GetShmemConfig, FrontendRequest.GetVringBaseSkipDrain,
    ];

    [Theory]
    [InlineData(1u)]  // GET_FEATURES
    [InlineData(15u)] // GET_PROTOCOL_FEATURES
    [InlineData(17u)] // GET_QUEUE_NUM
    [InlineData(11u)] // GET_VRING_BASE
    [InlineData(24u)] // GET_CONFIG
    [InlineData(31u)] // GET_INFLIGHT_FD
    [InlineData(36u)] // GET_MAX_MEM_SLOTS
    [InlineData(40u)] // GET_STATUS
    [InlineData(41u)] // GET_SHARED_OBJECT
    [InlineData(44u)] // GET_SHMEM_CONFIG
    [InlineData(45u)] // GET_VRING_BASE_SKIP_DRAIN
    public void Get_request_has_its_own_reply(uint code)
    {
        PayloadRules.HasOwnReply((FrontendRequest)code).Should().BeTrue(RequestNames.Name(code));
    }

    [Fact]
    public void HasOwnReply_is_true_exactly_for_requests_with_a_mandatory_reply()
    {
        foreach (FrontendRequest r in Enum.GetValues<FrontendRequest>())
        {
            if (r == FrontendRequest.SetLogBase)
            {
                continue; // has a reply only when LOG_SHMFD is negotiated, which the SDK never offers
            }

            PayloadRules.HasOwnReply(r).Should().Be(OwnReply.Contains(r), $"{RequestNames.Name(r)}");
        }
    }

    [Fact]
    public void HasOwnReply_is_false_for_codes_outside_the_enum()
    {
        PayloadRules.HasOwnReply((FrontendRequest)46).Should().BeFalse();
        PayloadRules.HasOwnReply((FrontendRequest)0xFFFF_FFFF).Should().BeFalse();
    }
}
