using System.Buffers.Binary;
using VhostCompat.IntegrationTests.Support;
using VhostCompat.Protocol;

namespace VhostCompat.IntegrationTests;

/// <summary>
/// Requests 44 (GET_SHMEM_CONFIG) and 45 (GET_VRING_BASE_SKIP_DRAIN) need protocol features 22
/// (SHMEM) and 23 (GET_VRING_BASE_SKIP_DRAIN), which the SDK never offers: they are refused like
/// any request whose feature was not negotiated, even after a full protocol negotiation.
/// </summary>
public sealed class NewerSpecRequestTests : HostileTestBase
{
    private const ulong NewerBits = (ulong)(VhostUserProtocolFeatures.GetVringBaseInflight | VhostUserProtocolFeatures.GpaAddresses
        | VhostUserProtocolFeatures.Shmem | VhostUserProtocolFeatures.GetVringBaseSkipDrain);

    public static TheoryData<uint, int, string> NewRequests => new()
    {
        { (uint)FrontendRequest.GetShmemConfig, 0, "GET_SHMEM_CONFIG" },
        { (uint)FrontendRequest.GetVringBaseSkipDrain, VringStatePayload.Size, "GET_VRING_BASE_SKIP_DRAIN" },
    };

    [Theory]
    [MemberData(nameof(NewRequests))]
    public async Task With_need_reply_after_full_negotiation_gets_a_nonzero_ack_and_the_session_continues(uint request, int size, string name)
    {
        ulong acked = await NegotiateProtocolAsync();
        (acked & (ulong)VhostUserProtocolFeatures.ReplyAck).Should().NotBe(0UL, "REPLY_ACK is negotiated here");

        (await Raw.AckAsync(request, 0x9, new byte[size])).Should().NotBe(0UL).And.NotBeNull();

        Fx.Logs.Text.Should().Contain($"Refused request {name}: protocol feature").And.Contain("was not negotiated");
        await AssertStillUsableAsync();
        await AssertNoLeaksAfterDisconnectAsync();
    }

    [Theory]
    [MemberData(nameof(NewRequests))]
    public async Task Without_need_reply_closes_the_connection(uint request, int size, string name)
    {
        await NegotiateProtocolAsync();

        Raw.Send(request, 0x1, new byte[size]);

        (await Raw.IsClosedAsync()).Should().BeTrue();
        (await EndReasonAsync()).Should().Contain($"{name} refused without NEED_REPLY").And.Contain("was not negotiated");
        Fx.Logs.Text.Should().Contain("Closing the connection");
        await AssertNoLeaksAfterDisconnectAsync();
    }

    [Fact]
    public async Task Newer_bits_are_never_offered_even_to_a_device_asking_for_every_bit()
    {
        await using var fx = new BackendFixture(new TestDevice(protocol: (VhostUserProtocolFeatures)ulong.MaxValue));
        await fx.WaitListeningAsync();
        await using var raw = await RawFrontend.ConnectAsync(fx.SocketPath);

        raw.Send(FrontendRequest.GetProtocolFeatures, needReply: false);
        ulong offered = BinaryPrimitives.ReadUInt64LittleEndian((await raw.ReceiveAsync())!.Value.Payload);
        (offered & NewerBits).Should().Be(0UL);
        ((ulong)fx.Backend.OfferedProtocolFeatures & NewerBits).Should().Be(0UL);

        (await raw.AckAsync(FrontendRequest.SetProtocolFeatures, U64(offered | NewerBits))).Should().Be(1UL);
        fx.Logs.Text.Should().Contain("were never offered");
    }
}
