using Microsoft.Extensions.Logging;
using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Proxy;

/// <summary>
/// Writes the acked-state record for the proxied device, the same record an SDK backend writes: what the frontend
/// acked (features, protocol features), the profile it was served, the ring sizes it set and the config it read.
/// Saved when the interface is complete (features acked and a ring started, or DRIVER_OK), only when it changed.
/// </summary>
internal sealed class ProxyRecordKeeper
{
    private readonly AckedStateStore _store;
    private readonly string _key;
    private readonly VirtioDeviceType _type;
    private readonly ProfilePin? _pin;
    private readonly int _queueCount;

    public ProxyRecordKeeper(AckedStateStore store, string key, VirtioDeviceType type, ProfilePin? pin, int queueCount, AckedStateRecord? current)
    {
        _store = store;
        _key = key;
        _type = type;
        _pin = pin;
        _queueCount = Math.Clamp(queueCount, 1, 255);
        Current = current;
    }

    /// <summary>The record as last loaded or saved.</summary>
    public AckedStateRecord? Current { get; private set; }

    /// <summary>The config bytes the guest read (GET_CONFIG from offset 0, pinned fields included); empty until read.</summary>
    public byte[] Config { get; set; } = [];

    public void Save(MessageShield state, ILogger logger)
    {
        var sizes = state.RingSizes.Where(kv => kv.Key < (uint)_queueCount).ToDictionary(kv => (int)kv.Key, kv => kv.Value);
        var candidate = new AckedStateRecord(_key, _type, state.AckedFeatures, state.AckedProtocol, _pin?.Profile, _queueCount, sizes,
            Config.AsSpan(0, Math.Min(Config.Length, VirtioConfigFields.MaxConfigSize)), profilePinned: _pin?.IsExplicit ?? false);
        if (Current is { } current && current.SameStateAs(candidate))
        {
            return;
        }

        try
        {
            Current = _store.Save(candidate);
            Log.RecordSaved(logger, _key, candidate.AckedFeatures);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or AckedStateCorruptException)
        {
            Log.RecordSaveFailed(logger, _key, ex.Message);
        }
    }
}
