using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.Proxy;

/// <summary>
/// The protocol features the proxy forwards faithfully, and why the others are taken out of the backend's offer.
/// A feature is carried when its messages are plain request/reply pairs the proxy validates and forwards with their
/// fds, and whose data path (memory, eventfds, the backend channel) goes to the backend untouched.
/// </summary>
internal static class CarriedProtocolFeatures
{
    /// <summary>Offered when the backend offers them.</summary>
    public const VhostUserProtocolFeatures Mask =
        VhostUserProtocolFeatures.Mq | VhostUserProtocolFeatures.LogShmfd | VhostUserProtocolFeatures.Rarp
        | VhostUserProtocolFeatures.ReplyAck | VhostUserProtocolFeatures.Mtu | VhostUserProtocolFeatures.BackendReq
        | VhostUserProtocolFeatures.Config | VhostUserProtocolFeatures.BackendSendFd | VhostUserProtocolFeatures.HostNotifier
        | VhostUserProtocolFeatures.InflightShmfd | VhostUserProtocolFeatures.ResetDevice | VhostUserProtocolFeatures.ConfigureMemSlots
        | VhostUserProtocolFeatures.Status | VhostUserProtocolFeatures.DeviceState;

    /// <summary>Never offered through the proxy, each with the reason (docs/proxy.md lists the same).</summary>
    public static readonly IReadOnlyList<(VhostUserProtocolFeatures Feature, string Reason)> NotCarried =
    [
        (VhostUserProtocolFeatures.CrossEndian, "big-endian rings: the shield validates ring state as little-endian only"),
        (VhostUserProtocolFeatures.CryptoSession, "variable-size crypto session payloads the shield does not validate"),
        (VhostUserProtocolFeatures.Pagefault, "postcopy: SET_MEM_TABLE then returns the backend's mapping addresses and userfaultfds, which the proxy does not track"),
        (VhostUserProtocolFeatures.InbandNotifications, "kicks and calls would travel as messages through the proxy: the data path must not"),
        (VhostUserProtocolFeatures.XenMmap, "Xen grant/foreign mappings: region descriptions the shield cannot check against fstat"),
        (VhostUserProtocolFeatures.SharedObject, "shared-object lookups by UUID between devices: no backend here implements them to test against"),
        (VhostUserProtocolFeatures.GetVringBaseInflight, "newer than the spec tables the shield validates"),
        (VhostUserProtocolFeatures.GpaAddresses, "newer than the spec tables the shield validates"),
        (VhostUserProtocolFeatures.Shmem, "newer than the spec tables the shield validates"),
        (VhostUserProtocolFeatures.GetVringBaseSkipDrain, "newer than the spec tables the shield validates"),
    ];

    /// <summary>The protocol feature a request needs acked before the proxy forwards it; None when it needs none.</summary>
    public static VhostUserProtocolFeatures RequiredFor(FrontendRequest request) => request switch
    {
        FrontendRequest.GetQueueNum => VhostUserProtocolFeatures.Mq,
        FrontendRequest.SetLogBase or FrontendRequest.SetLogFd => VhostUserProtocolFeatures.LogShmfd,
        FrontendRequest.SendRarp => VhostUserProtocolFeatures.Rarp,
        FrontendRequest.NetSetMtu => VhostUserProtocolFeatures.Mtu,
        FrontendRequest.SetBackendReqFd => VhostUserProtocolFeatures.BackendReq,
        FrontendRequest.SetVringEndian => VhostUserProtocolFeatures.CrossEndian,
        FrontendRequest.GetConfig or FrontendRequest.SetConfig => VhostUserProtocolFeatures.Config,
        FrontendRequest.CreateCryptoSession or FrontendRequest.CloseCryptoSession => VhostUserProtocolFeatures.CryptoSession,
        FrontendRequest.PostcopyAdvise or FrontendRequest.PostcopyListen or FrontendRequest.PostcopyEnd => VhostUserProtocolFeatures.Pagefault,
        FrontendRequest.GetInflightFd or FrontendRequest.SetInflightFd => VhostUserProtocolFeatures.InflightShmfd,
        FrontendRequest.ResetDevice => VhostUserProtocolFeatures.ResetDevice,
        FrontendRequest.VringKick => VhostUserProtocolFeatures.InbandNotifications,
        FrontendRequest.GetMaxMemSlots or FrontendRequest.AddMemReg or FrontendRequest.RemMemReg => VhostUserProtocolFeatures.ConfigureMemSlots,
        FrontendRequest.SetStatus or FrontendRequest.GetStatus => VhostUserProtocolFeatures.Status,
        FrontendRequest.GetSharedObject => VhostUserProtocolFeatures.SharedObject,
        FrontendRequest.SetDeviceStateFd or FrontendRequest.CheckDeviceState => VhostUserProtocolFeatures.DeviceState,
        FrontendRequest.GetShmemConfig => VhostUserProtocolFeatures.Shmem,
        FrontendRequest.GetVringBaseSkipDrain => VhostUserProtocolFeatures.GetVringBaseSkipDrain,
        _ => VhostUserProtocolFeatures.None,
    };
}
