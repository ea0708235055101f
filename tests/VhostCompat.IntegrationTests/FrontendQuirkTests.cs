using System.Buffers.Binary;
using System.Net.Sockets;
using VhostCompat.Backend;
using VhostCompat.Compat;
using VhostCompat.Frontend;
using VhostCompat.IntegrationTests.Support;
using VhostCompat.Virtio;

namespace VhostCompat.IntegrationTests;

/// <summary>
/// What real frontends do that the specification does not foresee (docs/protocol.md, frontend quirks), and the
/// backend-request channel: end to end over a real socket with the C# frontend playing the quirky frontend.
/// </summary>
public sealed class FrontendQuirkTests
{
    private const VhostUserProtocolFeatures AllProtocol = (VhostUserProtocolFeatures)ulong.MaxValue;

    [Fact]
    public async Task RING_RESET_acked_without_an_offer_is_accepted_ignored_and_warned_about_once()
    {
        await using var fx = new BackendFixture();
        await fx.WaitListeningAsync();
        await using var fe = await VhostUserFrontend.ConnectAsync(fx.SocketPath);
        ulong offered = await fe.GetFeaturesAsync();
        (offered & VirtioFeatureBits.RingReset).Should().Be(0, "the device does not offer RING_RESET");
        await fe.SetProtocolFeaturesAsync(await fe.GetProtocolFeaturesAsync());
        ulong acked = VirtioFeatureBits.Version1 | VirtioFeatureBits.ProtocolFeatures | VirtioFeatureBits.RingReset;

        await fe.SetFeaturesAsync(acked); // what QEMU 7.2's vhost-user-input forwards
        await fe.SetFeaturesAsync(acked);

        fx.Device.AckedFeatures.Should().HaveCount(2).And.AllSatisfy(f => f.Should().Be(VirtioFeatureBits.Version1, "the ignored bit never reaches the device"));
        fx.Logs.Lines.Count(l => l.Contains("never offered; accepted and ignored", StringComparison.Ordinal)).Should().Be(1, "one warning per bit and connection");
        Func<Task> otherBit = () => fe.SetFeaturesAsync(acked | (1UL << 41));
        await otherBit.Should().ThrowAsync<VhostUserRequestException>("any other unoffered bit is still refused");
    }

    [Fact]
    public async Task The_record_is_written_once_every_configured_ring_runs_even_without_DRIVER_OK()
    {
        string stateDir = Directory.CreateTempSubdirectory("vhostcompat-quirk-").FullName;
        var store = new AckedStateStore(stateDir);
        await using var fx = new BackendFixture(new TestDevice(queues: 2), o => { o.StateDirectory = stateDir; o.StateKey = "vm-input"; });
        await fx.WaitListeningAsync();
        await using var fe = await VhostUserFrontend.ConnectAsync(fx.SocketPath);
        await fe.NegotiateAsync(VirtioFeatureBits.Version1 | VirtioFeatureBits.EventIdx, AllProtocol); // STATUS negotiated, never sent
        using var mem = new GuestMemory(0, 4 << 20);
        await fe.SetMemTableAsync([mem]);
        var rings = new[] { new SplitRingDriver(mem, 0, 64), new SplitRingDriver(mem, 1 << 20, 64) };
        using var kick0 = new EventNotifier();
        using var kick1 = new EventNotifier();
        await rings[0].ConfigureAsync(fe, 0, kick0, null);
        await rings[1].ConfigureAsync(fe, 1, kick1, null);
        await fe.SetVringEnableAsync(0, true);
        store.Load("vm-input").Should().BeNull("ring 1 is configured but still disabled: the interface is not complete yet");

        await fe.SetVringEnableAsync(1, true); // REPLY_ACK: the reply comes after the record was written

        AckedStateRecord record = store.Load("vm-input")!;
        record.Should().NotBeNull("features acked and every configured ring started and enabled, with no SET_STATUS at all");
        record.AckedFeatures.Should().Be(VirtioFeatureBits.Version1 | VirtioFeatureBits.EventIdx);
        record.QueueSizes.Should().Equal(new Dictionary<int, int> { [0] = 64, [1] = 64 });
        fx.Logs.Lines.Should().Contain(l => l.Contains("no DRIVER_OK from the frontend", StringComparison.Ordinal));
    }

    [Fact]
    public async Task CONFIG_CHANGE_MSG_goes_to_the_frontend_on_the_backend_request_channel()
    {
        await using var fx = new BackendFixture();
        await fx.WaitListeningAsync();
        fx.Device.BackendRequests.NotifyConfigChanged().Should().BeFalse("no frontend is connected");
        await using var fe = await VhostUserFrontend.ConnectAsync(fx.SocketPath);
        await fe.NegotiateAsync(VirtioFeatureBits.Version1, AllProtocol);
        fx.Device.BackendRequests.IsOpen.Should().BeFalse();
        fx.Device.BackendRequests.NotifyConfigChanged().Should().BeFalse("the frontend has not handed over the channel");

        using Socket channel = await fe.SetBackendReqFdAsync();

        fx.Device.BackendRequests.IsOpen.Should().BeTrue();
        fx.Device.BackendRequests.NotifyConfigChanged().Should().BeTrue();
        var header = new byte[12];
        int n = await channel.ReceiveAsync(header, SocketFlags.None).WaitAsync(TimeSpan.FromSeconds(10));
        n.Should().Be(12);
        BinaryPrimitives.ReadUInt32LittleEndian(header).Should().Be(2, "VHOST_USER_BACKEND_CONFIG_CHANGE_MSG");
        BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(4)).Should().Be(1, "version 1, no NEED_REPLY: nothing waits for the frontend");
        BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(8)).Should().Be(0, "no payload");
        fx.Logs.Lines.Should().Contain(l => l.Contains("Sent CONFIG_CHANGE_MSG", StringComparison.Ordinal));

        await fe.DisposeAsync();
        await fx.WaitSessionsEndedAsync(1);
        fx.Device.BackendRequests.IsOpen.Should().BeFalse("the channel closes with its connection");
    }

    [Fact]
    public async Task CONFIG_CHANGE_MSG_needs_CONFIG_negotiated()
    {
        await using var fx = new BackendFixture();
        await fx.WaitListeningAsync();
        await using var fe = await VhostUserFrontend.ConnectAsync(fx.SocketPath);
        await fe.NegotiateAsync(VirtioFeatureBits.Version1, AllProtocol & ~VhostUserProtocolFeatures.Config);
        using Socket channel = await fe.SetBackendReqFdAsync();
        fx.Device.BackendRequests.NotifyConfigChanged().Should().BeFalse();
        fx.Logs.Lines.Should().Contain(l => l.Contains("CONFIG was not negotiated", StringComparison.Ordinal));
    }
}
