using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.Backend;

/// <summary>
/// Requests of the vhost-user specification this SDK does not implement. Each is refused; one whose protocol feature
/// was not negotiated is refused for that reason first (the frontend should not have sent it at all).
/// </summary>
internal static class UnsupportedRequests
{
    /// <summary>Requests this SDK does not implement: refused behind their protocol feature, with the reason.</summary>
    public static Outcome Refusal(FrontendRequest request, Negotiation negotiation)
    {
        (VhostUserProtocolFeatures gate, string reason) = request switch
        {
            FrontendRequest.SetVringEndian => (VhostUserProtocolFeatures.CrossEndian, "cross-endian rings are not supported"),
            FrontendRequest.PostcopyAdvise or FrontendRequest.PostcopyListen or FrontendRequest.PostcopyEnd => (VhostUserProtocolFeatures.Pagefault, "postcopy is not supported"),
            FrontendRequest.VringKick => (VhostUserProtocolFeatures.InbandNotifications, "in-band notifications are not supported"),
            FrontendRequest.GetSharedObject => (VhostUserProtocolFeatures.SharedObject, "shared objects are not supported"),
            FrontendRequest.GetShmemConfig => (VhostUserProtocolFeatures.Shmem, "VIRTIO Shared Memory Regions are not supported"),
            FrontendRequest.GetVringBaseSkipDrain => (VhostUserProtocolFeatures.GetVringBaseSkipDrain, "stopping a ring without draining is not supported"),
            FrontendRequest.CreateCryptoSession or FrontendRequest.CloseCryptoSession => (VhostUserProtocolFeatures.CryptoSession, "crypto sessions are not supported"),
            FrontendRequest.GpuSetSocket => (VhostUserProtocolFeatures.None, "GPU_SET_SOCKET is only valid for vhost-user-gpu devices"),
            _ => (VhostUserProtocolFeatures.None, "unknown request code"),
        };
        return (gate != VhostUserProtocolFeatures.None ? negotiation.Gate(gate) : null) ?? Outcome.Reject(reason);
    }
}
