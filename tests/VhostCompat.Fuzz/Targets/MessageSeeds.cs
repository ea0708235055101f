using VhostCompat.Protocol;

namespace VhostCompat.Fuzz.Targets;

/// <summary>Seed inputs for <see cref="MessageTarget"/>: one valid message of each request type (with its fd count), and a few streams of several.</summary>
internal static class MessageSeeds
{
    public static IEnumerable<(string Name, byte[] Data)> All()
    {
        var region = new MemoryRegionPayload(0x10000, 0x4000, FuzzRam.Ua(0x10000), 0x1000);
        var state = new VringStatePayload(0, 256).Encode();
        var singles = new (FrontendRequest Request, byte[] Payload, int Fds)[]
        {
            (FrontendRequest.GetFeatures, [], 0),
            (FrontendRequest.SetFeatures, U64Payload.Encode(0x1_3000_0000), 0),
            (FrontendRequest.SetOwner, [], 0),
            (FrontendRequest.ResetOwner, [], 0),
            (FrontendRequest.SetMemTable, MemoryTablePayload.Encode([region, region with { GuestPhysicalAddress = 0x14000, MemorySize = 0x1000 }]), 2),
            (FrontendRequest.SetLogBase, new LogDescriptionPayload(0x1000, 0).Encode(), 1),
            (FrontendRequest.SetLogFd, [], 1),
            (FrontendRequest.SetVringNum, state, 0),
            (FrontendRequest.SetVringAddr, new VringAddressPayload(0, 0, FuzzRam.Ua(0x10000), FuzzRam.Ua(0x12000), FuzzRam.Ua(0x11000), 0).Encode(), 0),
            (FrontendRequest.SetVringBase, new VringStatePayload(1, 0).Encode(), 0),
            (FrontendRequest.GetVringBase, new VringStatePayload(1, 0).Encode(), 0),
            (FrontendRequest.SetVringKick, U64Payload.Encode(VringFileWord.Make(0, noFd: false)), 1),
            (FrontendRequest.SetVringCall, U64Payload.Encode(VringFileWord.Make(1, noFd: true)), 0),
            (FrontendRequest.SetVringErr, U64Payload.Encode(VringFileWord.Make(0, noFd: false)), 1),
            (FrontendRequest.GetProtocolFeatures, [], 0),
            (FrontendRequest.SetProtocolFeatures, U64Payload.Encode(0x3), 0),
            (FrontendRequest.GetQueueNum, [], 0),
            (FrontendRequest.SetVringEnable, new VringStatePayload(0, 1).Encode(), 0),
            (FrontendRequest.SendRarp, U64Payload.Encode(0x0000_5254_0012_3456), 0),
            (FrontendRequest.NetSetMtu, U64Payload.Encode(1500), 0),
            (FrontendRequest.SetBackendReqFd, [], 1),
            (FrontendRequest.IotlbMsg, new byte[IotlbPayload.WireSize], 0),
            (FrontendRequest.SetVringEndian, new VringStatePayload(0, 1).Encode(), 0),
            (FrontendRequest.GetConfig, new DeviceConfigHeader(0, 8, 0).Encode(new byte[8]), 0),
            (FrontendRequest.SetConfig, new DeviceConfigHeader(4, 4, 1).Encode([1, 2, 3, 4]), 0),
            (FrontendRequest.CloseCryptoSession, U64Payload.Encode(7), 0),
            (FrontendRequest.PostcopyAdvise, [], 0),
            (FrontendRequest.GetInflightFd, new InflightDescriptionPayload(0, 0, 2, 256).Encode(), 0),
            (FrontendRequest.SetInflightFd, new InflightDescriptionPayload(8448, 0, 2, 256).Encode(), 1),
            (FrontendRequest.ResetDevice, [], 0),
            (FrontendRequest.VringKick, new VringStatePayload(0, 0).Encode(), 0),
            (FrontendRequest.GetMaxMemSlots, [], 0),
            (FrontendRequest.AddMemReg, SingleRegionPayload.Encode(region), 1),
            (FrontendRequest.RemMemReg, SingleRegionPayload.Encode(region), 0),
            (FrontendRequest.SetStatus, U64Payload.Encode(0x0F), 0),
            (FrontendRequest.GetStatus, [], 0),
            (FrontendRequest.SetDeviceStateFd, new byte[8], 1),
            (FrontendRequest.CheckDeviceState, [], 0),
            (FrontendRequest.GetShmemConfig, [], 0),
            (FrontendRequest.GetVringBaseSkipDrain, new VringStatePayload(1, 0).Encode(), 0),
        };

        foreach (var (request, payload, fds) in singles)
        {
            yield return (RequestNames.Name(request).ToLowerInvariant(), Input(fds, MessageFraming.Encode((uint)request, MessageHeader.Version, payload)));
        }

        byte[] handshake = [
            .. MessageFraming.Encode((uint)FrontendRequest.GetFeatures, MessageHeader.Version, []),
            .. MessageFraming.Encode((uint)FrontendRequest.SetFeatures, MessageHeader.Version | MessageHeader.NeedReplyFlag, U64Payload.Encode(1UL << 32)),
            .. MessageFraming.Encode((uint)FrontendRequest.SetVringNum, MessageHeader.Version, state),
        ];
        yield return ("stream-handshake", Input(0, handshake));
    }

    private static byte[] Input(int fds, byte[] stream) => [(byte)fds, 13, .. stream];
}
