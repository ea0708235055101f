namespace VhostCompat.Virtio;

// Device feature bits of the types other than net and block, from the virtio specification's "Feature bits"
// section of each device type. Methods, not fields: the tables are built by VirtioFeatures' static initializer.
public static partial class VirtioFeatures
{
    private static VirtioFeatureInfo[] ConsoleFeatures()
    {
        var t = VirtioDeviceType.Console;
        return
        [
            new(0, "size", "VIRTIO_CONSOLE_F_SIZE", t),
            new(1, "multiport", "VIRTIO_CONSOLE_F_MULTIPORT", t),
            new(2, "emerg_write", "VIRTIO_CONSOLE_F_EMERG_WRITE", t),
        ];
    }

    private static VirtioFeatureInfo[] ScsiFeatures()
    {
        var t = VirtioDeviceType.Scsi;
        return
        [
            new(0, "inout", "VIRTIO_SCSI_F_INOUT", t),
            new(1, "hotplug", "VIRTIO_SCSI_F_HOTPLUG", t),
            new(2, "param_change", "VIRTIO_SCSI_F_CHANGE", t),
            new(3, "t10_pi", "VIRTIO_SCSI_F_T10_PI", t),
        ];
    }

    private static VirtioFeatureInfo[] GpuFeatures()
    {
        var t = VirtioDeviceType.Gpu;
        return
        [
            new(0, "virgl", "VIRTIO_GPU_F_VIRGL", t),
            new(1, "edid", "VIRTIO_GPU_F_EDID", t),
            new(2, "resource_uuid", "VIRTIO_GPU_F_RESOURCE_UUID", t),
            new(3, "blob", "VIRTIO_GPU_F_RESOURCE_BLOB", t),
            new(4, "context_init", "VIRTIO_GPU_F_CONTEXT_INIT", t),
        ];
    }

    private static VirtioFeatureInfo[] VsockFeatures()
    {
        var t = VirtioDeviceType.Vsock;
        return
        [
            new(0, "stream", "VIRTIO_VSOCK_F_STREAM", t),
            new(1, "seqpacket", "VIRTIO_VSOCK_F_SEQPACKET", t),
            new(2, "no_implied_stream", "VIRTIO_VSOCK_F_NO_IMPLIED_STREAM", t),
        ];
    }

    private static VirtioFeatureInfo[] CryptoFeatures()
    {
        var t = VirtioDeviceType.Crypto;
        return
        [
            new(0, "revision_1", "VIRTIO_CRYPTO_F_REVISION_1", t),
            new(1, "cipher_stateless_mode", "VIRTIO_CRYPTO_F_CIPHER_STATELESS_MODE", t),
            new(2, "hash_stateless_mode", "VIRTIO_CRYPTO_F_HASH_STATELESS_MODE", t),
            new(3, "mac_stateless_mode", "VIRTIO_CRYPTO_F_MAC_STATELESS_MODE", t),
            new(4, "aead_stateless_mode", "VIRTIO_CRYPTO_F_AEAD_STATELESS_MODE", t),
            new(5, "akcipher_stateless_mode", "VIRTIO_CRYPTO_F_AKCIPHER_STATELESS_MODE", t),
        ];
    }

    private static VirtioFeatureInfo[] SoundFeatures() => [new(0, "ctls", "VIRTIO_SND_F_CTLS", VirtioDeviceType.Sound)];

    private static VirtioFeatureInfo[] FsFeatures() => [new(0, "notification", "VIRTIO_FS_F_NOTIFICATION", VirtioDeviceType.Fs)];

    private static VirtioFeatureInfo[] ScmiFeatures() =>
    [
        new(0, "p2a_channels", "VIRTIO_SCMI_F_P2A_CHANNELS", VirtioDeviceType.Scmi),
        new(1, "shared_memory", "VIRTIO_SCMI_F_SHARED_MEMORY", VirtioDeviceType.Scmi),
    ];

    private static VirtioFeatureInfo[] I2cFeatures() => [new(0, "zero_length_request", "VIRTIO_I2C_F_ZERO_LENGTH_REQUEST", VirtioDeviceType.I2c)];

    private static VirtioFeatureInfo[] GpioFeatures() => [new(0, "irq", "VIRTIO_GPIO_F_IRQ", VirtioDeviceType.Gpio)];
}
