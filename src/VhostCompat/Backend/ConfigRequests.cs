using VhostCompat.Compat;
using VhostCompat.Protocol;

namespace VhostCompat.Backend;

/// <summary>
/// The device config space (CONFIG): GET_CONFIG reads through the device and the pin (pinned fields are written over
/// what the device says), SET_CONFIG writes through the device. The range is checked here, never by the device.
/// </summary>
internal sealed class ConfigRequests
{
    private readonly VhostUserDevice _device;
    private readonly ProfilePin? _pin;

    public ConfigRequests(VhostUserDevice device, ProfilePin? pin)
    {
        _device = device;
        _pin = pin;
    }

    public Outcome Get(DeviceConfigHeader c)
    {
        if (RangeError(c) is { } error)
        {
            return Outcome.Reject(error);
        }

        var data = new byte[c.Size];
        _device.ReadConfig((int)c.Offset, data);
        _pin?.PatchConfig((int)c.Offset, data);
        return Outcome.Reply(c.Encode(data));
    }

    public Outcome Set(DeviceConfigHeader c, ReadOnlySpan<byte> data)
    {
        if (RangeError(c) is { } error)
        {
            return Outcome.Reject(error);
        }

        return _device.WriteConfig((int)c.Offset, data, c.Flags == DeviceConfigHeader.FlagMigration)
            ? Outcome.Ok
            : Outcome.Reject($"the device refused a config write at offset {c.Offset}, size {c.Size}");
    }

    /// <summary>The whole config space as the guest sees it (for the acked-state record).</summary>
    public byte[] Image()
    {
        var config = new byte[_device.ConfigSize];
        _device.ReadConfig(0, config);
        _pin?.PatchConfig(0, config);
        return config;
    }

    private string? RangeError(DeviceConfigHeader c)
    {
        if (RequestRules.ConfigFlags(c.Flags) is { } bad)
        {
            return bad;
        }

        if ((ulong)c.Offset + c.Size > (ulong)_device.ConfigSize)
        {
            return $"config range {c.Offset}+{c.Size} exceeds the {_device.ConfigSize}-byte config space";
        }

        return null;
    }
}
