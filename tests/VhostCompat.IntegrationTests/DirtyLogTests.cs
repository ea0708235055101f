using System.Buffers.Binary;
using VhostCompat.Frontend;
using VhostCompat.IntegrationTests.Support;
using VhostCompat.Interop;
using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.IntegrationTests;

/// <summary>Dirty-page logging for live migration (LOG_SHMFD, VHOST_F_LOG_ALL), driven by the C# frontend.</summary>
public sealed class DirtyLogTests
{
    [Fact]
    public async Task With_log_all_every_guest_write_and_the_used_ring_are_marked_in_the_shared_bitmap()
    {
        await using var fx = new BackendFixture();
        await fx.WaitListeningAsync();
        await using var fe = await VhostUserFrontend.ConnectAsync(fx.SocketPath);
        ulong acked = await fe.NegotiateAsync(ulong.MaxValue & ~VirtioFeatureBits.LogAll, (VhostUserProtocolFeatures)ulong.MaxValue);
        using var mem = new GuestMemory(0, 4 << 20);
        await fe.SetMemTableAsync([mem]);
        var ring = new SplitRingDriver(mem, 0, 64);
        using var kick = new EventNotifier();
        using var call = new EventNotifier();
        await ring.ConfigureAsync(fe, 0, kick, call);
        await fe.SetVringEnableAsync(0, true);

        // Before migration: nothing is logged.
        using var log = new DirtyPageLog(4 << 20);
        await fe.SetLogBaseAsync(log);
        ring.AddRequest("no logging yet"u8, 32);
        kick.Signal();
        await ring.WaitUsedAsync(1);
        log.CountDirty().Should().Be(0);

        // Migration starts: LOG_ALL on, the used ring flagged for logging (QEMU's order).
        await fe.SetFeaturesAsync(acked | VirtioFeatureBits.LogAll);
        await fe.SetVringAddrAsync(0, mem.ToFrontendAddress(ring.Desc), mem.ToFrontendAddress(ring.Used), mem.ToFrontendAddress(ring.Avail), log: true, logGuestAddress: ring.Used);
        ring.AddRequest("logged write"u8, 32);
        ulong written = ring.LastWritable;
        kick.Signal();
        await ring.WaitUsedAsync(1);
        log.IsDirty(written).Should().BeTrue("the device-writable buffer was written");
        log.IsDirty(ring.Used).Should().BeTrue("the used ring was written");
        log.IsDirty(ring.Desc).Should().BeFalse("the device never writes the descriptor table of a split ring");
        log.CountDirty().Should().Be(2);
    }

    [Fact]
    public async Task A_chain_popped_before_migration_started_and_completed_after_is_logged()
    {
        // An asynchronous device: the request is taken before LOG_ALL and written into after it.
        await using var fx = new BackendFixture(new TestDevice { Hold = d => d.Length > 0 && d[0] == (byte)'s' });
        await fx.WaitListeningAsync();
        await using var fe = await VhostUserFrontend.ConnectAsync(fx.SocketPath);
        ulong acked = await fe.NegotiateAsync(ulong.MaxValue & ~VirtioFeatureBits.LogAll, (VhostUserProtocolFeatures)ulong.MaxValue);
        using var mem = new GuestMemory(0, 4 << 20);
        await fe.SetMemTableAsync([mem]);
        var ring = new SplitRingDriver(mem, 0, 64);
        using var kick = new EventNotifier();
        await ring.ConfigureAsync(fe, 0, kick, null);
        await fe.SetVringEnableAsync(0, true);
        ring.AddRequest("slow request"u8, 32);
        ulong written = ring.LastWritable;
        kick.Signal();
        SpinWait.SpinUntil(() => fx.Device.Held.Count == 1, TimeSpan.FromSeconds(5)).Should().BeTrue();

        using var log = new DirtyPageLog(4 << 20);
        await fe.SetLogBaseAsync(log);
        await fe.SetFeaturesAsync(acked | VirtioFeatureBits.LogAll);
        await fe.SetVringAddrAsync(0, mem.ToFrontendAddress(ring.Desc), mem.ToFrontendAddress(ring.Used), mem.ToFrontendAddress(ring.Avail), log: true, logGuestAddress: ring.Used);
        fx.Device.ReleaseHeld = true;
        fx.Device.LastQueue!.Wake();
        await ring.WaitUsedAsync(1);
        log.IsDirty(written).Should().BeTrue("the write happened while the frontend was logging, whatever the pop time");
        log.IsDirty(ring.Used).Should().BeTrue();
    }

    [Fact]
    public async Task A_log_too_small_for_the_memory_table_is_refused_with_a_reply()
    {
        await using var fx = new BackendFixture();
        await fx.WaitListeningAsync();
        await using var raw = await RawFrontend.ConnectAsync(fx.SocketPath);
        (await raw.AckAsync(FrontendRequest.SetProtocolFeatures, U64Payload.Encode((ulong)(VhostUserProtocolFeatures.LogShmfd | VhostUserProtocolFeatures.ReplyAck)))).Should().Be(0);
        using (var mem = FileDescriptor.CreateMemfd("vhostcompat-guest", 64 << 20))
        {
            (await raw.AckAsync(FrontendRequest.SetMemTable, MemoryTablePayload.Encode([new MemoryRegionPayload(0, 64 << 20, 0x7000_0000, 0)]), [mem.Value])).Should().Be(0);
        }

        using var small = FileDescriptor.CreateMemfd("vhostcompat-log", 4096);
        // 64 MiB of guest memory needs 2 KiB of bitmap: 1 KiB is too small; an offset overflow is refused too.
        raw.Send(FrontendRequest.SetLogBase, new LogDescriptionPayload(1024, 0).Encode(), [small.Value], needReply: false);
        var reply = await raw.ReceiveAsync();
        BinaryPrimitives.ReadUInt64LittleEndian(reply!.Value.Payload).Should().Be(1);
        raw.Send(FrontendRequest.SetLogBase, new LogDescriptionPayload(4096, ulong.MaxValue - 100).Encode(), [small.Value], needReply: false);
        BinaryPrimitives.ReadUInt64LittleEndian((await raw.ReceiveAsync())!.Value.Payload).Should().Be(1);
        raw.Send(FrontendRequest.SetLogBase, new LogDescriptionPayload(4096, 4096).Encode(), [small.Value], needReply: false);
        BinaryPrimitives.ReadUInt64LittleEndian((await raw.ReceiveAsync())!.Value.Payload).Should().Be(1, "the fd is too short for offset + size");
        fx.Logs.Text.Should().Contain("cannot cover guest memory");
    }

    [Fact]
    public async Task A_log_replacement_refused_while_logging_closes_the_connection_so_the_migration_fails_loudly()
    {
        await using var fx = new BackendFixture();
        await fx.WaitListeningAsync();
        await using var fe = await VhostUserFrontend.ConnectAsync(fx.SocketPath);
        ulong acked = await fe.NegotiateAsync(ulong.MaxValue, (VhostUserProtocolFeatures)ulong.MaxValue);
        using var mem = new GuestMemory(0x1_0000_0000, 1 << 20);
        await fe.SetMemTableAsync([mem]);
        using var log = new DirtyPageLog(0x1_0010_0000);
        await fe.SetLogBaseAsync(log);
        await fe.SetFeaturesAsync(acked | VirtioFeatureBits.LogAll);

        // QEMU ignores SET_LOG_BASE's reply value and frees its previous log after it: a refusal answered with a
        // reply would leave the backend marking pages nobody reads. The backend closes the connection instead.
        using var tooSmall = new DirtyPageLog(4 << 20);
        var act = () => fe.SetLogBaseAsync(tooSmall);
        await act.Should().ThrowAsync<VhostUserRequestException>();
        await fx.WaitSessionsEndedAsync(1);
        fx.LastSessionEndReason.Should().Contain("replacement dirty log refused while logging is on").And.Contain("cannot cover guest memory");
    }

    [Fact]
    public async Task Log_all_acked_before_the_log_as_when_QEMU_starts_a_device_during_a_migration_is_accepted_and_logged_once_the_log_arrives()
    {
        await using var fx = new BackendFixture();
        await fx.WaitListeningAsync();
        await using var fe = await VhostUserFrontend.ConnectAsync(fx.SocketPath);
        ulong acked = await fe.NegotiateAsync(ulong.MaxValue, (VhostUserProtocolFeatures)ulong.MaxValue);
        (acked & VirtioFeatureBits.LogAll).Should().Be(0UL, "the C# frontend, like QEMU, turns logging on only for a migration");

        // vhost_dev_start with log_enabled: SET_FEATURES(LOG_ALL), memory, rings, and SET_LOG_BASE last.
        await fe.SetFeaturesAsync(acked | VirtioFeatureBits.LogAll);
        using var mem = new GuestMemory(0, 4 << 20);
        await fe.SetMemTableAsync([mem]);
        var ring = new SplitRingDriver(mem, 0, 64);
        using var kick = new EventNotifier();
        await ring.ConfigureAsync(fe, 0, kick, null);
        await fe.SetVringEnableAsync(0, true);
        using var log = new DirtyPageLog(4 << 20);
        await fe.SetLogBaseAsync(log);
        ring.AddRequest("logged once the log is there"u8, 64);
        kick.Signal();
        await ring.WaitUsedAsync(1);
        log.IsDirty(ring.LastWritable).Should().BeTrue();
        fx.SessionsEnded.Should().Be(0);
    }

    [Fact]
    public async Task Writes_to_memory_added_while_logging_beyond_the_current_log_are_carried_into_the_larger_log_QEMU_sends_next()
    {
        await using var fx = new BackendFixture();
        await fx.WaitListeningAsync();
        await using var fe = await VhostUserFrontend.ConnectAsync(fx.SocketPath);
        ulong acked = await fe.NegotiateAsync(ulong.MaxValue, (VhostUserProtocolFeatures)ulong.MaxValue);
        using var low = new GuestMemory(0, 4 << 20);
        await fe.SetMemTableAsync([low]);
        var ring = new SplitRingDriver(low, 0, 64);
        using var kick = new EventNotifier();
        await ring.ConfigureAsync(fe, 0, kick, null);
        await fe.SetVringEnableAsync(0, true);
        using var small = new DirtyPageLog(4 << 20); // one page of bitmap: guest memory below 128 MiB
        await fe.SetLogBaseAsync(small);
        await fe.SetFeaturesAsync(acked | VirtioFeatureBits.LogAll);

        // Memory hot-added at 256 MiB while logging (vhost_commit sends the table, then a larger log).
        using var high = new GuestMemory(256UL << 20, 1 << 20);
        await fe.SetMemTableAsync([low, high]);
        ulong target = (256UL << 20) + 0x3000;
        ulong request = ring.Allocate(16);
        low.Write(request, "hot-added memory"u8);
        ring.WriteDescriptor(0, request, 16, 1, 1);
        ring.WriteDescriptor(1, target, 64, 2, 0);
        ring.Publish(0);
        kick.Signal();
        await ring.WaitUsedAsync(1);
        var back = new byte[16];
        high.Read(target, back);
        back.Should().Equal("yromem dedda-toh"u8.ToArray(), "the device wrote into the hot-added region");
        small.CountDirty().Should().Be(0, "the only device write was beyond the bitmap (the used ring is not flagged for logging here)");

        using var large = new DirtyPageLog((256UL << 20) + (1 << 20));
        await fe.SetLogBaseAsync(large);
        large.IsDirty(target).Should().BeTrue("the write beyond the first log's bitmap is carried into its replacement, not dropped");
        fx.Logs.Text.Should().Contain("are carried into its replacement");
    }
}
