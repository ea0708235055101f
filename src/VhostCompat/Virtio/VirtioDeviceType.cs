namespace VhostCompat.Virtio;

/// <summary>virtio device IDs (virtio specification, "Device Types").</summary>
public enum VirtioDeviceType : uint
{
    /// <summary>Network card (1).</summary>
    Net = 1,

    /// <summary>Block device (2).</summary>
    Block = 2,

    /// <summary>Console (3).</summary>
    Console = 3,

    /// <summary>Entropy source (4).</summary>
    Rng = 4,

    /// <summary>SCSI host (8).</summary>
    Scsi = 8,

    /// <summary>GPU (16).</summary>
    Gpu = 16,

    /// <summary>Input device (18).</summary>
    Input = 18,

    /// <summary>Socket device (19).</summary>
    Vsock = 19,

    /// <summary>Crypto device (20).</summary>
    Crypto = 20,

    /// <summary>Sound device (25).</summary>
    Sound = 25,

    /// <summary>File system (26).</summary>
    Fs = 26,

    /// <summary>SCMI (System Control and Management Interface) device (32).</summary>
    Scmi = 32,

    /// <summary>I2C adapter (34).</summary>
    I2c = 34,

    /// <summary>GPIO (41).</summary>
    Gpio = 41,
}
