using VhostCompat.Compat;
using VhostCompat.Frontend;
using VhostCompat.IntegrationTests.Support;
using VhostCompat.Protocol;
using VhostCompat.Proxy;
using VhostCompat.Virtio;

namespace VhostCompat.IntegrationTests;

/// <summary>
/// The proxy in front of an unpinned SDK backend gives the answers an SDK backend pinned to the same profile gives
/// (CompatPinningTests asks the same questions of the SDK backend), writes the same record, and refuses a restarted
/// backend that cannot honour it before the frontend can connect.
/// </summary>
public sealed class ProxyPinningTests
{
    private const VhostUserProtocolFeatures AllProtocol = (VhostUserProtocolFeatures)ulong.MaxValue;
    private const string Pin = "type=net,version_1=on,mrg_rxbuf=on,max_ring=64,queues=2";

    private static TestDevice BigDevice() => new(queues: 4,
        features: VirtioFeatureBits.Version1 | VirtioFeatureBits.EventIdx | VirtioFeatureBits.IndirectDesc | VirtioFeatureBits.NetMrgRxbuf
            | VirtioFeatureBits.NetMq | (1UL << 17) /* ctrl_vq */);

    [Fact]
    public async Task A_pinned_proxy_offers_exactly_the_profile_and_enforces_it_like_a_pinned_SDK_backend()
    {
        await using var fx = new BackendFixture(BigDevice());
        await fx.WaitListeningAsync();
        await using var proxy = await RunningProxy.StartAsync(fx, o => o.CompatProfile = Pin);
        await using var fe = await VhostUserFrontend.ConnectAsync(proxy.ListenPath);
        ulong offered = await fe.GetFeaturesAsync();
        offered.Should().Be(VirtioFeatureBits.Version1 | VirtioFeatureBits.NetMrgRxbuf | VirtioFeatureBits.ProtocolFeatures | VirtioFeatureBits.LogAll,
            "event_idx, indirect_desc, mq and ctrl_vq are offered by the backend but not in the pinned profile");
        var protocol = await fe.GetProtocolFeaturesAsync();
        protocol.Should().NotHaveFlag(VhostUserProtocolFeatures.InbandNotifications, "kicks would travel through the proxy");
        await fe.SetProtocolFeaturesAsync(protocol);
        (await fe.GetQueueNumAsync()).Should().Be(1, "queues=2 is one net queue pair although the backend has two");
        await fe.SetVringNumAsync(0, 64);
        Func<Task> tooBig = () => fe.SetVringNumAsync(0, 128);
        await tooBig.Should().ThrowAsync<VhostUserRequestException>("max_ring=64 is the ring-size limit under the pin");
        Func<Task> thirdQueue = () => fe.SetVringNumAsync(2, 64);
        await thirdQueue.Should().ThrowAsync<VhostUserRequestException>("the profile has 2 virtqueues although the backend has 4");
        fx.Device.AckedFeatures.Should().BeEmpty("nothing was acked yet");
        Func<Task> unpinnedBit = () => fe.SetFeaturesAsync(offered | VirtioFeatureBits.EventIdx);
        await unpinnedBit.Should().ThrowAsync<Exception>("event_idx was never offered through the proxy");
        fx.Device.AckedFeatures.Should().BeEmpty("the refused SET_FEATURES never reached the backend");
        proxy.Proxy.RefusedRequests.Should().BeGreaterThanOrEqualTo(3);
    }

    [Fact]
    public async Task The_proxy_records_the_acked_state_and_refuses_a_restarted_backend_that_lacks_an_acked_bit()
    {
        string stateDir = Directory.CreateTempSubdirectory("vhostcompat-proxy-state-").FullName;
        ulong wanted = VirtioFeatureBits.Version1 | VirtioFeatureBits.NetMrgRxbuf | VirtioFeatureBits.EventIdx;
        string backendSocket;
        await using (var fx = new BackendFixture(BigDevice()))
        {
            await fx.WaitListeningAsync();
            backendSocket = fx.SocketPath;
            await using var proxy = await RunningProxy.StartAsync(fx, o => { o.StateDirectory = stateDir; o.StateKey = "vm-1234.net0"; });
            await using (var fe = await VhostUserFrontend.ConnectAsync(proxy.ListenPath))
            {
                (await fe.NegotiateAsync(wanted, AllProtocol)).Should().Be(wanted | VirtioFeatureBits.ProtocolFeatures);
                await fe.SetVringNumAsync(0, 128);
                await fe.SetStatusAsync(DeviceStatus.Acknowledge | DeviceStatus.Driver | DeviceStatus.FeaturesOk | DeviceStatus.DriverOk);
                await fe.GetStatusAsync(); // a round trip: SET_STATUS was handled before the record is read
            }

            var record = new AckedStateStore(stateDir).Load("vm-1234.net0");
            record.Should().NotBeNull("the proxy saves the record at DRIVER_OK");
            record!.AckedFeatures.Should().Be(wanted | VirtioFeatureBits.ProtocolFeatures);
            record.QueueSizes.Should().Contain(0, 128);
            record.Profile.Should().BeNull("the proxy was transparent");
        }

        // An older backend without EVENT_IDX comes up on the same socket: the proxy refuses it, naming the bit.
        var older = new TestDevice(queues: 4, features: VirtioFeatureBits.Version1 | VirtioFeatureBits.NetMrgRxbuf);
        await using var downgraded = new BackendFixture(older);
        await downgraded.WaitListeningAsync();
        await using var again = await RunningProxy.StartAsync(downgraded, o => { o.StateDirectory = stateDir; o.StateKey = "vm-1234.net0"; }, VhostUserProxyState.Refused);
        again.Proxy.Problems.Should().ContainSingle().Which.Should().Contain("event_idx");
        File.Exists(again.ListenPath).Should().BeFalse("the frontend is not let in: nothing listens for it");
        _ = backendSocket;
    }

    [Fact]
    public async Task An_unpinned_proxy_is_transparent_except_for_the_protocol_features_it_cannot_carry()
    {
        await using var fx = new BackendFixture(BigDevice());
        await fx.WaitListeningAsync();
        await using var direct = await VhostUserFrontend.ConnectAsync(fx.SocketPath);
        ulong directFeatures = await direct.GetFeaturesAsync();
        var directProtocol = await direct.GetProtocolFeaturesAsync();
        await direct.DisposeAsync();
        await fx.WaitSessionsEndedAsync(1);

        await using var proxy = await RunningProxy.StartAsync(fx);
        await using var fe = await VhostUserFrontend.ConnectAsync(proxy.ListenPath);
        (await fe.GetFeaturesAsync()).Should().Be(directFeatures);
        (await fe.GetProtocolFeaturesAsync()).Should().Be(directProtocol & (VhostUserProtocolFeatures)(ulong)CarriedProtocolFeatures.Mask);
        (await fe.NegotiateAsync(directFeatures & ~VirtioFeatureBits.LogAll, AllProtocol)).Should().NotBe(0);
        fx.Device.AckedFeatures.Should().ContainSingle().Which.Should().Be(directFeatures & ~(VirtioFeatureBits.LogAll | VirtioFeatureBits.ProtocolFeatures));
    }

    /// <summary>A proxy run in-process in front of a <see cref="BackendFixture"/>, awaited until it reaches a state.</summary>
    private sealed class RunningProxy : IAsyncDisposable
    {
        private readonly CancellationTokenSource _stop = new();
        private Task _run = Task.CompletedTask;

        private RunningProxy(VhostUserProxy proxy, string listenPath)
        {
            Proxy = proxy;
            ListenPath = listenPath;
        }

        public VhostUserProxy Proxy { get; }

        public string ListenPath { get; }

        public static async Task<RunningProxy> StartAsync(BackendFixture backend, Action<VhostUserProxyOptions>? configure = null,
            VhostUserProxyState until = VhostUserProxyState.WaitingForFrontend)
        {
            var options = new VhostUserProxyOptions
            {
                ListenPath = Path.Combine(backend.Directory, "proxy.sock"),
                BackendPath = backend.SocketPath,
                ReconnectMaxDelay = TimeSpan.FromMilliseconds(200),
            };
            configure?.Invoke(options);
            var proxy = new VhostUserProxy(options);
            var reached = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            proxy.StateChanged += s =>
            {
                if (s == until)
                {
                    reached.TrySetResult();
                }
            };
            var running = new RunningProxy(proxy, options.ListenPath);
            running._run = Task.Run(() => proxy.RunAsync(running._stop.Token));
            await reached.Task.WaitAsync(TimeSpan.FromSeconds(20));
            if (until == VhostUserProxyState.WaitingForFrontend)
            {
                // The state is set just before the socket is bound; connecting needs the socket itself.
                for (int i = 0; i < 200 && !File.Exists(options.ListenPath); i++)
                {
                    await Task.Delay(10);
                }
            }

            return running;
        }

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            await _run.WaitAsync(TimeSpan.FromSeconds(20));
            _stop.Dispose();
        }
    }
}
