using Microsoft.Extensions.Logging;
using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Backend;

/// <summary>
/// Feature negotiation and device status of one connection: what is offered (from the resolved offer), what the
/// frontend acked (SET_FEATURES, SET_PROTOCOL_FEATURES) and the driver status (SET_STATUS).
/// </summary>
internal sealed class Negotiation
{
    private readonly VhostUserDevice _device;
    private readonly ILogger _logger;
    private ulong _ignoredLogged;

    public Negotiation(VhostUserDevice device, BackendCapabilities offer, ILogger logger)
    {
        _device = device;
        _logger = logger;
        OfferedFeatures = offer.VirtioFeatures;
        OfferedProtocol = offer.ProtocolFeatures;
    }

    public ulong OfferedFeatures { get; }

    public ulong OfferedProtocol { get; }

    /// <summary>The acked feature set as the session applies it (bits accepted-and-ignored by <see cref="FrontendQuirks"/> removed).</summary>
    public ulong AckedFeatures { get; private set; }

    public bool FeaturesSet { get; private set; }

    public ulong AckedProtocol { get; private set; }

    public bool ProtocolNegotiated { get; private set; }

    public byte Status { get; private set; }

    public bool PackedRing => (AckedFeatures & VirtioFeatureBits.RingPacked) != 0;

    public bool Logging => (AckedFeatures & VirtioFeatureBits.LogAll) != 0;

    public bool Acked(VhostUserProtocolFeatures feature) => (AckedProtocol & (ulong)feature) != 0;

    /// <summary>Null when <paramref name="feature"/> was negotiated; otherwise the refusal.</summary>
    public Outcome? Gate(VhostUserProtocolFeatures feature) =>
        Acked(feature) ? null : Outcome.Reject($"protocol feature {feature} was not negotiated");

    /// <summary>True when ring enabling follows VHOST_USER_F_PROTOCOL_FEATURES (SET_VRING_ENABLE is valid).</summary>
    public bool RingsStartDisabled => FeaturesSet ? (AckedFeatures & VirtioFeatureBits.ProtocolFeatures) != 0 : ProtocolNegotiated;

    /// <summary>
    /// SET_FEATURES. <paramref name="queuesRunning"/>: a changed set is refused while queues run (LOG_ALL may toggle).
    /// Returns the refusal, or null with <paramref name="loggingChanged"/> set when LOG_ALL flipped.
    /// </summary>
    public Outcome? SetFeatures(ulong features, bool queuesRunning, out bool loggingChanged)
    {
        loggingChanged = false;
        ulong notOffered = features & ~OfferedFeatures;
        ulong ignored = notOffered & FrontendQuirks.AcceptedUnoffered;
        if (notOffered != ignored)
        {
            return Outcome.Reject($"acked bits 0x{notOffered & ~ignored:x} were never offered (offer 0x{OfferedFeatures:x})");
        }

        if (ignored != 0)
        {
            features &= ~ignored;
            if ((ignored & ~_ignoredLogged) != 0)
            {
                _ignoredLogged |= ignored;
                Log.UnofferedBitsIgnored(_logger, VirtioFeatures.Format(_device.DeviceType, ignored), ignored);
            }
        }

        if (FeaturesSet && ((features ^ AckedFeatures) & ~VirtioFeatureBits.LogAll) != 0 && queuesRunning)
        {
            return Outcome.Reject($"features 0x{features:x} differ from 0x{AckedFeatures:x} while queues are running");
        }

        loggingChanged = ((AckedFeatures ^ features) & VirtioFeatureBits.LogAll) != 0;
        AckedFeatures = features;
        FeaturesSet = true;
        Log.FeaturesAcked(_logger, features, OfferedFeatures);
        Metrics.Negotiations.Add(1);
        return null;
    }

    /// <summary>The acked features the device sees (without the vhost-only bits).</summary>
    public ulong GuestFeatures => AckedFeatures & ~(VirtioFeatureBits.ProtocolFeatures | VirtioFeatureBits.LogAll);

    public Outcome SetProtocolFeatures(ulong features)
    {
        ulong notOffered = features & ~OfferedProtocol;
        if (notOffered != 0)
        {
            return Outcome.Reject($"acked protocol bits 0x{notOffered:x} were never offered (offer 0x{OfferedProtocol:x})");
        }

        AckedProtocol = features;
        ProtocolNegotiated = true;
        Log.ProtocolFeaturesAcked(_logger, features, OfferedProtocol);
        return Outcome.Ok;
    }

    /// <summary>SET_STATUS: refusal or null; <paramref name="driverUp"/> is true when DRIVER_OK was just set.</summary>
    public Outcome? SetStatus(ulong value, out bool driverUp)
    {
        driverUp = false;
        if (Protocol.RequestRules.Status(value) is { } bad)
        {
            return Outcome.Reject(bad);
        }

        // SET_STATUS(0) is not treated as a reset: QEMU 7.2 sends it before GET_VRING_BASE, and ring positions must
        // survive until then (docs/protocol.md, "Device status").
        driverUp = (value & (ulong)DeviceStatus.DriverOk) != 0 && (Status & (byte)DeviceStatus.DriverOk) == 0;
        Status = (byte)value;
        Log.Status(_logger, Status);
        return null;
    }

    /// <summary>RESET_DEVICE: features and status back to their initial values (protocol features stay).</summary>
    public void Reset()
    {
        AckedFeatures = 0;
        FeaturesSet = false;
        Status = 0;
    }
}

/// <summary>
/// Bits some frontends forward in SET_FEATURES although the backend never offered them, because the frontend
/// implements them itself. They are accepted and ignored (one warning per bit and connection); every other
/// unoffered bit is still refused. docs/protocol.md, "Frontend quirks", has the evidence per bit.
/// </summary>
internal static class FrontendQuirks
{
    /// <summary>
    /// VIRTIO_F_RING_RESET (bit 40): QEMU 7.2's vhost-user-input (and any vhost-user device whose frontend does not
    /// filter the bit by the backend's offer) lets the driver ack it. A queue reset is carried out by the frontend
    /// with the ring messages the backend already serves (GET_VRING_BASE stops the ring, SET_VRING_* restart it):
    /// the vhost-user protocol has no message of its own for it, so the backend has nothing to do differently.
    /// </summary>
    public const ulong AcceptedUnoffered = VirtioFeatureBits.RingReset;
}
