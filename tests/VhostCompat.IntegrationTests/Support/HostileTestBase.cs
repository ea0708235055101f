using System.Buffers.Binary;
using VhostCompat.Interop;
using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.IntegrationTests.Support;

/// <summary>Shared set-up for the hostile-frontend tests: a backend, a raw connection, and the leak oracle.</summary>
public abstract class HostileTestBase : IAsyncLifetime
{
    private int _fdBaseline;
    private Dictionary<string, string> _fdsAtStart = [];
    private int _guestMapBaseline;

    internal BackendFixture Fx { get; private set; } = null!;

    internal RawFrontend Raw { get; private set; } = null!;

    internal virtual BackendFixture CreateFixture() => new();

    public async Task InitializeAsync()
    {
        Fx = CreateFixture();
        await Fx.WaitListeningAsync();
        _fdBaseline = ProcessResources.OpenFds();
        _fdsAtStart = ProcessResources.FdTargets();
        _guestMapBaseline = ProcessResources.GuestMemoryMappings();
        Raw = await RawFrontend.ConnectAsync(Fx.SocketPath);
    }

    public async Task DisposeAsync()
    {
        await Raw.DisposeAsync();
        await Fx.DisposeAsync();
    }

    internal static byte[] U64(ulong v) => U64Payload.Encode(v);

    internal static byte[] State(uint index, uint num) => new VringStatePayload(index, num).Encode();

    /// <summary>GET/SET_PROTOCOL_FEATURES with everything offered, so every request is reachable.</summary>
    internal async Task<ulong> NegotiateProtocolAsync()
    {
        Raw.Send(FrontendRequest.GetProtocolFeatures, needReply: false);
        var reply = await Raw.ReceiveAsync();
        ulong offered = BinaryPrimitives.ReadUInt64LittleEndian(reply!.Value.Payload);
        (await Raw.AckAsync(FrontendRequest.SetProtocolFeatures, U64(offered))).Should().Be(0);
        return offered;
    }

    internal async Task SetFeaturesAsync(ulong features) =>
        (await Raw.AckAsync(FrontendRequest.SetFeatures, U64(features))).Should().Be(0);

    /// <summary>The connection still answers a normal request (stream in sync, session alive).</summary>
    internal async Task AssertStillUsableAsync()
    {
        Raw.Send(FrontendRequest.GetFeatures, needReply: false);
        var reply = await Raw.ReceiveAsync();
        reply.Should().NotBeNull("the connection must stay usable after a rejected request");
        reply!.Value.Header.Request.Should().Be((uint)FrontendRequest.GetFeatures);
        BinaryPrimitives.ReadUInt64LittleEndian(reply.Value.Payload).Should().Be(Fx.Backend.OfferedFeatures);
    }

    /// <summary>Waits for the session to end and returns why it ended.</summary>
    internal async Task<string?> EndReasonAsync()
    {
        await Fx.WaitSessionsEndedAsync(1);
        return Fx.LastSessionEndReason;
    }

    /// <summary>Closes the raw connection, waits for the session to end, and checks fds and guest mappings are back to baseline (I3).</summary>
    internal async Task AssertNoLeaksAfterDisconnectAsync()
    {
        await Raw.DisposeAsync();
        await Fx.WaitSessionsEndedAsync(1);
        int now = await ProcessResources.SettleFdsAsync(_fdBaseline);
        if (now > _fdBaseline)
        {
            var extra = ProcessResources.FdTargets().Where(kv => !_fdsAtStart.TryGetValue(kv.Key, out var t) || t != kv.Value).Select(kv => $"{kv.Key} -> {kv.Value}");
            now.Should().BeLessThanOrEqualTo(_fdBaseline, "every fd received was closed; new fds: " + string.Join(", ", extra) + "\nlog:\n" + Fx.Logs.Text);
        }
        ProcessResources.GuestMemoryMappings().Should().BeLessThanOrEqualTo(_guestMapBaseline);
    }

    /// <summary>A memfd of the given size, as a frontend would send for guest RAM.</summary>
    internal static FileDescriptor Memfd(long size) => FileDescriptor.CreateMemfd("vhostcompat-guest", size);

    internal static byte[] MemTable(params MemoryRegionPayload[] regions) => MemoryTablePayload.Encode(regions);

    internal const ulong ProtocolBit = VirtioFeatureBits.ProtocolFeatures;
}
