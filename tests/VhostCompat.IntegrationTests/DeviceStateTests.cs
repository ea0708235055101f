using System.Text;
using VhostCompat.Backend;
using VhostCompat.Frontend;
using VhostCompat.IntegrationTests.Support;
using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.IntegrationTests;

/// <summary>
/// Device state transfer (SET_DEVICE_STATE_FD / CHECK_DEVICE_STATE). QEMU 7.2 does not drive it
/// (it arrived in QEMU 8.2), so the C# frontend plays the migrating frontend here.
/// </summary>
public sealed class DeviceStateTests
{
    private sealed class StatefulDevice : TestDeviceBase
    {
        public string State = string.Empty;
        public uint Version = 1;

        public override uint StateVersion => Version;

        public override byte[] SaveState() => Encoding.UTF8.GetBytes(State);

        public override bool LoadState(uint version, ReadOnlySpan<byte> state)
        {
            if (version > Version)
            {
                return false; // written by a newer build
            }

            State = Encoding.UTF8.GetString(state);
            return true;
        }
    }

    /// <summary>Minimal device for these tests.</summary>
    private abstract class TestDeviceBase : VhostUserDevice
    {
        public override VirtioDeviceType DeviceType => VirtioDeviceType.Net;

        public override ulong DeviceFeatures => VirtioFeatureBits.Version1;

        public override int QueueCount => 2;
    }

    private static async Task<(VhostUserBackend Backend, Task Run, CancellationTokenSource Stop, string Path)> StartAsync(VhostUserDevice device)
    {
        string path = Path.Combine(Directory.CreateTempSubdirectory("vhostcompat-state-").FullName, "s.sock");
        var backend = new VhostUserBackend(device, new VhostUserBackendOptions { SocketPath = path });
        var stop = new CancellationTokenSource();
        Task run = Task.Run(() => backend.RunAsync(stop.Token));
        while (!File.Exists(path))
        {
            await Task.Delay(10);
        }

        return (backend, run, stop, path);
    }

    [Fact]
    public async Task State_saved_on_the_source_is_loaded_on_the_destination()
    {
        var source = new StatefulDevice { State = "mac 52:54:00:12:34:56 -> port 1" };
        var destination = new StatefulDevice();
        var (_, runA, stopA, pathA) = await StartAsync(source);
        var (_, runB, stopB, pathB) = await StartAsync(destination);
        byte[] blob;
        await using (var fe = await VhostUserFrontend.ConnectAsync(pathA))
        {
            (await fe.GetProtocolFeaturesAsync()).Should().HaveFlag(VhostUserProtocolFeatures.DeviceState);
            await fe.SetProtocolFeaturesAsync(VhostUserProtocolFeatures.DeviceState | VhostUserProtocolFeatures.ReplyAck);
            blob = await fe.SaveDeviceStateAsync();
        }

        await using (var fe = await VhostUserFrontend.ConnectAsync(pathB))
        {
            await fe.SetProtocolFeaturesAsync(VhostUserProtocolFeatures.DeviceState | VhostUserProtocolFeatures.ReplyAck);
            await fe.LoadDeviceStateAsync(blob);
        }

        destination.State.Should().Be(source.State);
        stopA.Cancel();
        stopB.Cancel();
        await Task.WhenAll(runA, runB);
    }

    [Fact]
    public async Task Truncated_corrupted_foreign_or_newer_state_is_refused_and_the_backend_keeps_serving()
    {
        var device = new StatefulDevice { State = "keep me" };
        var (backend, run, stop, path) = await StartAsync(device);
        await using var fe = await VhostUserFrontend.ConnectAsync(path);
        await fe.SetProtocolFeaturesAsync(VhostUserProtocolFeatures.DeviceState | VhostUserProtocolFeatures.ReplyAck);
        byte[] good = await fe.SaveDeviceStateAsync();

        byte[] truncated = good[..^5];
        byte[] corrupted = good.ToArray();
        corrupted[22] ^= 0xFF;
        byte[] newerEnvelope = good.ToArray();
        newerEnvelope[4] = 2;
        device.Version = 2;
        byte[] newerDevice = await fe.SaveDeviceStateAsync();
        device.Version = 1;
        foreach (byte[] bad in new[] { truncated, corrupted, newerEnvelope, newerDevice, Array.Empty<byte>() })
        {
            Func<Task> load = () => fe.LoadDeviceStateAsync(bad);
            await load.Should().ThrowAsync<VhostUserRequestException>();
            device.State.Should().Be("keep me");
        }

        (await fe.GetFeaturesAsync()).Should().Be(backend.OfferedFeatures, "the session survives every refused transfer");
        stop.Cancel();
        await run;
    }

    [Fact]
    public void A_device_without_state_does_not_offer_DEVICE_STATE()
    {
        var backend = new VhostUserBackend(new TestDevice(), new VhostUserBackendOptions { SocketPath = "/tmp/unused.sock" });
        backend.OfferedProtocolFeatures.Should().NotHaveFlag(VhostUserProtocolFeatures.DeviceState);
    }
}
