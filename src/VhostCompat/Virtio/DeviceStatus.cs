namespace VhostCompat.Virtio;

/// <summary>virtio device status bits (SET_STATUS / GET_STATUS).</summary>
[Flags]
public enum DeviceStatus : byte
{
    /// <summary>0: reset.</summary>
    Reset = 0,

    /// <summary>The guest noticed the device.</summary>
    Acknowledge = 0x01,

    /// <summary>The guest has a driver for it.</summary>
    Driver = 0x02,

    /// <summary>The driver is ready.</summary>
    DriverOk = 0x04,

    /// <summary>Feature negotiation is complete.</summary>
    FeaturesOk = 0x08,

    /// <summary>The device hit an error it cannot recover from.</summary>
    DeviceNeedsReset = 0x40,

    /// <summary>The driver gave up on the device.</summary>
    Failed = 0x80,
}
