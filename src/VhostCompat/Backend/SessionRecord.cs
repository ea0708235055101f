using Microsoft.Extensions.Logging;
using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Backend;

/// <summary>
/// When the acked-state record of a connection is written: once the interface the guest sees is complete. That is
/// DRIVER_OK, or — for frontends that never forward the status (QEMU's vhost-user-input) or do not negotiate STATUS —
/// the moment features are acked and every ring the frontend configured is started and enabled. A record identical to
/// the one last written on this connection is not written again.
/// </summary>
internal sealed class SessionRecord
{
    private readonly VhostUserDevice _device;
    private readonly Negotiation _negotiation;
    private readonly RingLifecycle _rings;
    private readonly ConfigRequests _config;
    private readonly ProfilePin? _pin;
    private readonly Action<AckedStateRecord>? _save;
    private readonly string? _key;
    private readonly ILogger _logger;
    private string? _lastSaved;

    public SessionRecord(VhostUserDevice device, Negotiation negotiation, RingLifecycle rings, ConfigRequests config, ProfilePin? pin,
        Action<AckedStateRecord>? save, string? key, ILogger logger)
    {
        _device = device;
        _negotiation = negotiation;
        _rings = rings;
        _config = config;
        _pin = pin;
        _save = save;
        _key = key;
        _logger = logger;
    }

    /// <summary>A ring started or was enabled: writes the record if that completed the interface.</summary>
    public void OnRingsChanged()
    {
        if (_save is null || !_negotiation.FeaturesSet)
        {
            return;
        }

        bool any = false;
        foreach (var r in _rings.Rings)
        {
            if (r.Size > 0 && r.KickSet)
            {
                if (!r.Started || !r.Enabled)
                {
                    return;
                }

                any = true;
            }
        }

        if (any)
        {
            Save((_negotiation.Status & (byte)DeviceStatus.DriverOk) != 0 ? "rings started" : "rings started, no DRIVER_OK from the frontend");
        }
    }

    /// <summary>Writes what the frontend acked (unless nothing changed since the last write on this connection).</summary>
    public void Save(string trigger)
    {
        if (_save is null || !_negotiation.FeaturesSet)
        {
            return;
        }

        var sizes = _rings.Rings.Where(r => r.Size > 0).ToDictionary(r => r.Index, r => r.Size);
        byte[] config = _config.Image();
        string signature = $"{_negotiation.GuestFeatures:x}/{_negotiation.AckedProtocol:x}/{string.Join(',', sizes.Select(kv => $"{kv.Key}:{kv.Value}"))}/{Convert.ToHexString(config)}";
        if (signature == _lastSaved)
        {
            return;
        }

        _lastSaved = signature;
        Log.RecordTrigger(_logger, trigger);
        _save(new AckedStateRecord(_key!, _device.DeviceType, _negotiation.GuestFeatures, _negotiation.AckedProtocol, _pin?.Profile, _rings.Count, sizes, config,
            profilePinned: _pin?.IsExplicit ?? false)
        {
            DeviceStateVersion = _negotiation.Acked(VhostUserProtocolFeatures.DeviceState) ? _device.StateVersion : null,
        });
    }
}
