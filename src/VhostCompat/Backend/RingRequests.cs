using Microsoft.Extensions.Logging;
using VhostCompat.Interop;
using VhostCompat.Protocol;

namespace VhostCompat.Backend;

/// <summary>
/// The ring setup messages (SET_VRING_NUM, _ADDR, _BASE, _KICK, _CALL, _ERR, _ENABLE and GET_VRING_BASE): each is
/// validated against the ring's state and the negotiated features, then applied through <see cref="RingLifecycle"/>.
/// </summary>
internal sealed class RingRequests
{
    private readonly RingLifecycle _rings;
    private readonly Negotiation _negotiation;
    private readonly VhostUserDevice _device;
    private readonly ushort _maxQueueSize;
    private readonly ILogger _logger;

    public RingRequests(RingLifecycle rings, Negotiation negotiation, VhostUserDevice device, ushort maxQueueSize, ILogger logger)
    {
        _rings = rings;
        _negotiation = negotiation;
        _device = device;
        _maxQueueSize = maxQueueSize;
        _logger = logger;
    }

    public Outcome SetNum(VringStatePayload s)
    {
        if (!_rings.TryGet(s.Index, out VirtqueueSetup ring, out Outcome refused))
        {
            return refused;
        }

        if (ring.Started)
        {
            return Outcome.Reject($"ring {s.Index} is running");
        }

        if (RequestRules.RingSize(s.Num, _maxQueueSize, _negotiation.PackedRing, out bool aboveLimit) is { } bad)
        {
            return aboveLimit ? Outcome.RejectSizeProbe(bad) : Outcome.Reject(bad);
        }

        ring.Size = (int)s.Num;
        return Outcome.Ok;
    }

    public Outcome SetAddress(VringAddressPayload a)
    {
        if (!_rings.TryGet(a.Index, out VirtqueueSetup ring, out Outcome refused))
        {
            return refused;
        }

        if (RequestRules.AddressFlags(a.Flags) is { } badFlags)
        {
            return Outcome.Reject(badFlags);
        }

        if (!_negotiation.PackedRing && (a.Descriptor % 16 != 0 || a.Available % 2 != 0 || a.Used % 4 != 0))
        {
            return Outcome.Reject("ring addresses are misaligned (descriptors 16, avail 2, used 4 bytes)");
        }

        if (ring.Started && (a.Descriptor != ring.Descriptor || a.Available != ring.Available || a.Used != ring.Used))
        {
            return Outcome.Reject($"ring {a.Index} is running: only logging may change");
        }

        ring.Descriptor = a.Descriptor;
        ring.Available = a.Available;
        ring.Used = a.Used;
        ring.AddressFlags = a.Flags;
        ring.LogGuestAddress = a.LogGuestAddress;
        ring.AddressesSet = true;
        if (ring.Started)
        {
            _rings.ApplyLogging();
        }

        return Outcome.Ok;
    }

    public Outcome SetBase(VringStatePayload s)
    {
        if (!_rings.TryGet(s.Index, out VirtqueueSetup ring, out Outcome refused))
        {
            return refused;
        }

        if (ring.Started)
        {
            return Outcome.Reject($"ring {s.Index} is running");
        }

        if (RequestRules.SplitRingBase(s.Num, _negotiation.PackedRing) is { } badBase)
        {
            return Outcome.Reject(badBase);
        }

        ring.Base = s.Num;
        return Outcome.Ok;
    }

    public Outcome GetBase(VringStatePayload s)
    {
        if (!_rings.TryGet(s.Index, out VirtqueueSetup ring, out Outcome refused))
        {
            return refused;
        }

        // Stopping an unconfigured or already stopped ring is harmless (DPDK virtio-user reconnect does it).
        _rings.Stop(ring, "GET_VRING_BASE");
        ring.ReplaceKick(null);
        ring.KickSet = false;
        return Outcome.Reply(new VringStatePayload(s.Index, ring.Base).Encode());
    }

    public Outcome SetFile(FrontendRequest request, ulong word, VhostUserMessage message)
    {
        ulong index = word & VringFileWord.IndexMask;
        if (!_rings.TryGet((uint)index, out VirtqueueSetup ring, out Outcome refused))
        {
            return refused;
        }

        bool noFd = (word & VringFileWord.NoFdFlag) != 0;
        FileDescriptor? fd = noFd ? null : message.TakeFd(0);
        switch (request)
        {
            case FrontendRequest.SetVringKick:
                // A new kick on a running ring: restart it on the new notifier.
                _rings.Stop(ring, "kick replaced");
                ring.ReplaceKick(fd);
                ring.KickSet = true;
                ring.KickPolled = noFd;
                _rings.TryStart(ring, quiet: false);
                break;
            case FrontendRequest.SetVringCall:
                ring.Queue?.SetCall(fd); // the worker holds a reference while signalling, so the old fd can close now
                ring.ReplaceCall(fd);
                ring.CallDisabled = noFd;
                break;
            default:
                ring.Queue?.SetErr(fd);
                ring.ReplaceErr(fd);
                break;
        }

        return Outcome.Ok;
    }

    public Outcome SetEnable(VringStatePayload s)
    {
        if (!_rings.TryGet(s.Index, out VirtqueueSetup ring, out Outcome refused))
        {
            return refused;
        }

        if (RequestRules.EnableValue(s.Num) is { } badValue)
        {
            return Outcome.Reject(badValue);
        }

        if (!_negotiation.RingsStartDisabled)
        {
            return Outcome.Reject("VHOST_USER_F_PROTOCOL_FEATURES was not negotiated");
        }

        bool wasEnabled = ring.Enabled;
        ring.Enabled = s.Num == 1;
        ring.Queue?.SetEnabled(ring.Enabled);
        if (ring.Enabled != wasEnabled && ring.Worker is { } worker && ring.Binding is { } binding)
        {
            // The worker reports the change (OnQueueEnabledChanged) and, enabled, lets the device look at buffers the driver queued meanwhile.
            worker.Poke(binding);
        }

        if (ring.Started)
        {
            Log.QueueState(_logger, ring.Index, ring.Enabled ? "enabled" : "disabled", ring.Size, ring.Enabled, ring.Base);
            _device.OnQueueStateChanged(ring.Info);
        }

        return Outcome.Ok;
    }

    /// <summary>RESET_OWNER (deprecated): stop and disable the rings, keep the session (vhost-user spec, "Front-end message types").</summary>
    public Outcome ResetOwner()
    {
        foreach (var r in _rings.Rings)
        {
            _rings.Stop(r, "reset owner");
            r.Enabled = false;
        }

        return Outcome.Ok;
    }
}
