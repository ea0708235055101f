using System.Buffers.Binary;
using System.Text;
using VhostCompat.Frontend;
using VhostCompat.IntegrationTests.Support;
using VhostCompat.Interop;
using VhostCompat.Memory;
using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.IntegrationTests;

/// <summary>
/// Inflight I/O tracking end to end over the socket (GET/SET_INFLIGHT_FD with INFLIGHT_SHMFD), the C#
/// frontend playing QEMU's part: it keeps the buffer, a backend dies with requests in flight, a new
/// backend gets the buffer and resubmits them. Plus the bad inputs of issue 6 for these messages.
/// </summary>
public sealed class InflightTrackingTests
{
    private const VhostUserProtocolFeatures Protocol = VhostUserProtocolFeatures.InflightShmfd | VhostUserProtocolFeatures.ReplyAck | VhostUserProtocolFeatures.Mq;

    private static TestDevice Device(Func<byte[], bool>? hold = null) =>
        new(queues: 2, protocol: VhostUserProtocolFeatures.InflightShmfd) { Hold = hold };

    [Fact]
    public async Task Requests_in_flight_when_a_backend_dies_are_resubmitted_by_the_next_one_and_complete_exactly_once()
    {
        using var mem = new GuestMemory(0, 4 << 20);
        var ring = new SplitRingDriver(mem, 0, 16);
        using var kick = new EventNotifier();
        using var call = new EventNotifier();
        InflightBuffer? buffer;
        var heads = new Dictionary<string, ushort>();

        // Backend 1 completes "done-*" requests and sits on "slow-*" ones, then dies.
        await using (var first = new BackendFixture(Device(data => Encoding.ASCII.GetString(data).StartsWith("slow", StringComparison.Ordinal))))
        {
            await first.WaitListeningAsync();
            await using var fe = await VhostUserFrontend.ConnectAsync(first.SocketPath);
            await fe.NegotiateAsync(VirtioFeatureBits.Version1, Protocol);
            (await fe.GetProtocolFeaturesAsync()).Should().HaveFlag(VhostUserProtocolFeatures.InflightShmfd, "the device opted in");
            buffer = await fe.GetInflightFdAsync(2, 16);
            buffer.Should().NotBeNull();
            buffer!.Size.Should().Be(2 * InflightArea.QueueRegionSize(16, packed: false));
            buffer.QueueCount.Should().Be(2);
            await fe.SetInflightFdAsync(buffer);
            await fe.SetMemTableAsync([mem]);
            await ring.ConfigureAsync(fe, 0, kick, call);
            await fe.SetVringEnableAsync(0, true);
            foreach (string r in new[] { "slow-1", "done-2", "slow-3", "done-4" })
            {
                heads[r] = ring.AddRequest(Encoding.ASCII.GetBytes(r), 16);
            }

            kick.Signal();
            var used = await ring.WaitUsedAsync(2);
            used.Select(u => (ushort)u.Id).Should().Equal(heads["done-2"], heads["done-4"]);
            SpinWait.SpinUntil(() => first.Device.Held.Count == 2, TimeSpan.FromSeconds(5)).Should().BeTrue();
        }

        // QEMU, seeing the backend gone, restores last_avail_idx from used.idx (2): alone, that would hand out
        // avail[2] = "slow-3" once more and never "slow-1". The inflight buffer tells the new backend the truth.
        await using var second = new BackendFixture(Device());
        await second.WaitListeningAsync();
        await using (var fe = await VhostUserFrontend.ConnectAsync(second.SocketPath))
        {
            await fe.NegotiateAsync(VirtioFeatureBits.Version1, Protocol);
            await fe.SetInflightFdAsync(buffer);
            await fe.SetMemTableAsync([mem]);
            await ring.ConfigureAsync(fe, 0, kick, call, nextAvail: ring.UsedIndex());
            await fe.SetVringEnableAsync(0, true);
            var resubmitted = await ring.WaitUsedAsync(2);
            resubmitted.Select(u => (ushort)u.Id).Should().Equal([heads["slow-1"], heads["slow-3"]], "in the order the first backend fetched them");
            second.Device.Resubmitted.Should().Equal("slow-1", "slow-3");
            second.Logs.Text.Should().Contain("2 chains to resubmit");

            heads["new-5"] = ring.AddRequest("new-5"u8, 16);
            kick.Signal();
            (await ring.WaitUsedAsync(1)).Single().Id.Should().Be(heads["new-5"]);
            second.Device.Resubmitted.Should().HaveCount(2, "a new request is not a resubmission");
            (await fe.GetVringBaseAsync(0)).Should().Be(5, "five requests taken from the avail ring in all");
        }

        buffer.Dispose();
    }

    [Fact]
    public async Task A_restart_without_requests_in_flight_resumes_where_the_ring_is_and_resubmits_nothing()
    {
        using var mem = new GuestMemory(0, 4 << 20);
        var ring = new SplitRingDriver(mem, 0, 16);
        using var kick = new EventNotifier();
        using var call = new EventNotifier();
        await using var fx = new BackendFixture(Device());
        await fx.WaitListeningAsync();
        using InflightBuffer? buffer = await NegotiatedBufferAsync(fx, async fe =>
        {
            await ring.ConfigureAsync(fe, 0, kick, call);
            ring.AddRequest("a"u8, 8);
            ring.AddRequest("b"u8, 8);
            kick.Signal();
            await ring.WaitUsedAsync(2);
        }, mem);

        await using var fe = await VhostUserFrontend.ConnectAsync(fx.SocketPath);
        await fe.NegotiateAsync(VirtioFeatureBits.Version1, Protocol);
        await fe.SetInflightFdAsync(buffer!);
        await fe.SetMemTableAsync([mem]);
        await ring.ConfigureAsync(fe, 0, kick, call, nextAvail: 2);
        await fe.SetVringEnableAsync(0, true);
        (await fe.GetVringBaseAsync(0)).Should().Be(2);
        fx.Device.Resubmitted.Should().BeEmpty();
    }

    private static async Task<InflightBuffer?> NegotiatedBufferAsync(BackendFixture fx, Func<VhostUserFrontend, Task> use, GuestMemory mem)
    {
        await using var fe = await VhostUserFrontend.ConnectAsync(fx.SocketPath);
        await fe.NegotiateAsync(VirtioFeatureBits.Version1, Protocol);
        InflightBuffer? buffer = await fe.GetInflightFdAsync(2, 16);
        await fe.SetInflightFdAsync(buffer!);
        await fe.SetMemTableAsync([mem]);
        await use(fe);
        return buffer;
    }

    [Fact]
    public async Task A_corrupt_inflight_region_breaks_that_queue_only_and_the_process_and_connection_stay_up()
    {
        using var mem = new GuestMemory(0, 4 << 20);
        var ring0 = new SplitRingDriver(mem, 0, 16);
        var ring1 = new SplitRingDriver(mem, 0x100000, 16);
        using var kick0 = new EventNotifier();
        using var kick1 = new EventNotifier();
        using var call = new EventNotifier();
        using var err = new EventNotifier();
        await using var fx = new BackendFixture(Device());
        await fx.WaitListeningAsync();
        await using var fe = await VhostUserFrontend.ConnectAsync(fx.SocketPath);
        await fe.NegotiateAsync(VirtioFeatureBits.Version1, Protocol);
        using InflightBuffer buffer = (await fe.GetInflightFdAsync(2, 16))!;
        BinaryPrimitives.WriteUInt16LittleEndian(buffer.Bytes[8..], 9); // queue 0: an unknown region version
        await fe.SetInflightFdAsync(buffer);
        await fe.SetMemTableAsync([mem]);
        await fe.SetVringErrAsync(0, err);
        await ring0.ConfigureAsync(fe, 0, kick0, call);
        await ring1.ConfigureAsync(fe, 1, kick1, call);
        await fe.SetVringEnableAsync(0, true);
        await fe.SetVringEnableAsync(1, true);

        SpinWait.SpinUntil(() => fx.Logs.Text.Contains("version 9 is not supported", StringComparison.Ordinal), TimeSpan.FromSeconds(5)).Should().BeTrue(fx.Logs.Text);
        err.Consume().Should().BeGreaterThan(0, "the frontend learns of the broken queue through its error fd");
        ring0.AddRequest("ignored"u8, 8);
        kick0.Signal();
        ring1.AddRequest("served"u8, 8);
        kick1.Signal();
        (await ring1.WaitUsedAsync(1)).Should().HaveCount(1, "queue 1's region is valid");
        ring0.UsedIndex().Should().Be(0, "nothing is done on a queue whose region is corrupt");
        (await fe.GetFeaturesAsync()).Should().NotBe(0, "the connection is still served");
    }

    private static int InflightMappings() =>
        File.ReadAllLines("/proc/self/maps").Count(l => l.Contains("memfd:vhostcompat-inflight ", StringComparison.Ordinal) || l.EndsWith("memfd:vhostcompat-inflight (deleted)", StringComparison.Ordinal));

    [Fact]
    public async Task F3_repeated_GET_INFLIGHT_FD_keeps_one_buffer_and_leaks_nothing()
    {
        await using var fx = new BackendFixture(Device());
        await fx.WaitListeningAsync();
        await using var fe = await VhostUserFrontend.ConnectAsync(fx.SocketPath);
        await fe.NegotiateAsync(VirtioFeatureBits.Version1, Protocol);
        (await fe.GetInflightFdAsync(2, 256))!.Dispose();
        int fds = ProcessResources.OpenFds();
        int maps = InflightMappings();
        for (int i = 0; i < 200; i++)
        {
            using InflightBuffer? b = await fe.GetInflightFdAsync(2, 256);
            b.Should().NotBeNull();
        }

        InflightMappings().Should().Be(maps, "each GET replaces the previous buffer, whose mapping is released");
        (await ProcessResources.SettleFdsAsync(fds)).Should().BeLessThanOrEqualTo(fds);
    }

    [Fact]
    public async Task F4_a_huge_GET_INFLIGHT_FD_is_checked_against_the_device_before_anything_is_allocated()
    {
        await using var fx = new BackendFixture(Device());
        await fx.WaitListeningAsync();
        await using var fe = await VhostUserFrontend.ConnectAsync(fx.SocketPath);
        await fe.NegotiateAsync(VirtioFeatureBits.Version1, Protocol);
        int before = InflightMappings();
        (await fe.GetInflightFdAsync(0xFFFF, 0xFFFF)).Should().BeNull("an empty description: no buffer");
        InflightMappings().Should().Be(before, "no memfd was created or mapped");
        fx.Logs.Text.Should().Contain("inflight buffer for 65535 queues");
        (await fe.GetInflightFdAsync(2, 16)).Should().NotBeNull("the session is unaffected");
    }

    // ---- hostile SET/GET_INFLIGHT_FD ----

    public sealed class Hostile : HostileTestBase
    {
        internal override BackendFixture CreateFixture() => new(Device());

        private static byte[] Description(ulong size, ulong offset, ushort queues, ushort queueSize) =>
            new InflightDescriptionPayload(size, offset, queues, queueSize).Encode();

        public static TheoryData<string, ulong, ulong, ushort, ushort, long, string> BadBuffers => new()
        {
            { "size one region short", 2112, 0, 2, 128, 8192, "does not match 2 split queues of 128 entries (4224 bytes)" },
            { "size larger than the layout", 8192, 0, 2, 128, 8192, "does not match" },
            { "no queues", 0, 0, 0, 128, 8192, "for 0 queues" },
            { "more queues than the device", 3 * 2112, 0, 3, 128, 8192, "for 3 queues; the device has 1..2" },
            { "queue size 0", 128, 0, 2, 0, 8192, "queue size 0 outside" },
            { "queue size above the device maximum", 2 * 16448, 0, 2, 1024, 65536, "queue size 1024 outside 1..256" },
            { "offset not page aligned", 4224, 100, 2, 128, 8192, "not a page-aligned offset" },
            { "offset overflowing", 4224, ulong.MaxValue - 4095, 2, 128, 8192, "not a page-aligned offset below" },
            { "file shorter than offset + size", 4224, 4096, 2, 128, 8192, "inflight needs 8320 bytes of its fd but the file has 8192" },
        };

        [Theory]
        [MemberData(nameof(BadBuffers))]
        public async Task A_bad_inflight_buffer_is_refused_with_a_reply_its_fd_closed_and_the_session_kept(
            string caseName, ulong size, ulong offset, ushort queues, ushort queueSize, long fileSize, string reason)
        {
            await NegotiateProtocolAsync();
            using (var fd = FileDescriptor.CreateMemfd("vhostcompat-inflight-test", fileSize))
            {
                (await Raw.AckAsync(FrontendRequest.SetInflightFd, Description(size, offset, queues, queueSize), [fd.Value]))
                    .Should().Be(1, caseName);
            }

            Fx.Logs.Text.Should().Contain(reason);
            await AssertStillUsableAsync();
            await AssertNoLeaksAfterDisconnectAsync();
        }

        [Fact]
        public async Task A_pipe_is_refused_as_an_inflight_buffer()
        {
            await NegotiateProtocolAsync();
            var (read, write) = Libc.Pipe();
            using (new FileDescriptor(read))
            using (new FileDescriptor(write))
            {
                (await Raw.AckAsync(FrontendRequest.SetInflightFd, Description(4224, 0, 2, 128), [read])).Should().Be(1);
            }

            Fx.Logs.Text.Should().Contain("inflight fd is not a regular memory file");
            await AssertNoLeaksAfterDisconnectAsync();
        }

        [Fact]
        public async Task SET_INFLIGHT_FD_without_its_fd_closes_the_connection()
        {
            await NegotiateProtocolAsync();
            Raw.Send(FrontendRequest.SetInflightFd, Description(4224, 0, 2, 128), needReply: false);
            (await Raw.IsClosedAsync()).Should().BeTrue();
            await AssertNoLeaksAfterDisconnectAsync();
        }

        [Fact]
        public async Task A_GET_INFLIGHT_FD_the_backend_cannot_honour_is_answered_with_an_empty_description()
        {
            await NegotiateProtocolAsync();
            Raw.Send(FrontendRequest.GetInflightFd, Description(0, 0, 40, 128), needReply: false);
            var reply = await Raw.ReceiveAsync();
            reply.Should().NotBeNull();
            reply!.Value.Payload.Should().HaveCount(InflightDescriptionPayload.Size);
            InflightDescriptionPayload.Read(reply.Value.Payload).MmapSize.Should().Be(0, "size 0 = no buffer; QEMU then runs without one");
            await AssertStillUsableAsync();
            await AssertNoLeaksAfterDisconnectAsync();
        }

        [Fact]
        public async Task Inflight_requests_are_refused_when_the_feature_was_not_negotiated()
        {
            (await Raw.AckAsync(FrontendRequest.SetProtocolFeatures, U64((ulong)VhostUserProtocolFeatures.ReplyAck))).Should().Be(0);
            using var fd = FileDescriptor.CreateMemfd("vhostcompat-inflight-test", 8192);
            (await Raw.AckAsync(FrontendRequest.SetInflightFd, Description(4224, 0, 2, 128), [fd.Value])).Should().Be(1);
            Raw.Send(FrontendRequest.GetInflightFd, Description(0, 0, 2, 128), needReply: true);
            var reply = await Raw.ReceiveAsync();
            InflightDescriptionPayload.Read(reply!.Value.Payload).MmapSize.Should().Be(0);
            Fx.Logs.Text.Should().Contain("was not negotiated");
            await AssertStillUsableAsync();
        }
    }
}
