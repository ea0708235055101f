namespace VhostCompat.Virtio;

/// <summary>Masks of the virtio transport feature bits and the vhost-only bits a backend deals with.</summary>
public static class VirtioFeatureBits
{
    /// <summary>Bit 24: VIRTIO_F_NOTIFY_ON_EMPTY (legacy).</summary>
    public const ulong NotifyOnEmpty = 1UL << 24;

    /// <summary>Bit 26: VHOST_F_LOG_ALL (vhost-only; needed for live migration).</summary>
    public const ulong LogAll = 1UL << 26;

    /// <summary>Bit 27: VIRTIO_F_ANY_LAYOUT (legacy; implied by VERSION_1).</summary>
    public const ulong AnyLayout = 1UL << 27;

    /// <summary>Bit 28: VIRTIO_RING_F_INDIRECT_DESC.</summary>
    public const ulong IndirectDesc = 1UL << 28;

    /// <summary>Bit 29: VIRTIO_RING_F_EVENT_IDX.</summary>
    public const ulong EventIdx = 1UL << 29;

    /// <summary>Bit 30: VHOST_USER_F_PROTOCOL_FEATURES (vhost-user-only reuse of a reserved bit; never seen by the guest).</summary>
    public const ulong ProtocolFeatures = 1UL << 30;

    /// <summary>Bit 32: VIRTIO_F_VERSION_1.</summary>
    public const ulong Version1 = 1UL << 32;

    /// <summary>Bit 33: VIRTIO_F_ACCESS_PLATFORM.</summary>
    public const ulong AccessPlatform = 1UL << 33;

    /// <summary>Bit 34: VIRTIO_F_RING_PACKED.</summary>
    public const ulong RingPacked = 1UL << 34;

    /// <summary>Bit 35: VIRTIO_F_IN_ORDER.</summary>
    public const ulong InOrder = 1UL << 35;

    /// <summary>Bit 40: VIRTIO_F_RING_RESET (per-queue reset; QEMU's property <c>queue_reset</c>).</summary>
    public const ulong RingReset = 1UL << 40;

    /// <summary>Bit 15 of virtio-net: VIRTIO_NET_F_MRG_RXBUF.</summary>
    public const ulong NetMrgRxbuf = 1UL << 15;

    /// <summary>Bit 22 of virtio-net: VIRTIO_NET_F_MQ.</summary>
    public const ulong NetMq = 1UL << 22;

    /// <summary>Bit 5 of virtio-net: VIRTIO_NET_F_MAC.</summary>
    public const ulong NetMac = 1UL << 5;

    /// <summary>Bit 3 of virtio-net: VIRTIO_NET_F_MTU.</summary>
    public const ulong NetMtu = 1UL << 3;

    /// <summary>Bit 21 of virtio-net: VIRTIO_NET_F_GUEST_ANNOUNCE.</summary>
    public const ulong NetGuestAnnounce = 1UL << 21;

    /// <summary>Bit 1 of virtio-blk: VIRTIO_BLK_F_SIZE_MAX (config <c>size_max</c> is valid).</summary>
    public const ulong BlockSizeMax = 1UL << 1;

    /// <summary>Bit 2 of virtio-blk: VIRTIO_BLK_F_SEG_MAX (config <c>seg_max</c> is valid).</summary>
    public const ulong BlockSegMax = 1UL << 2;

    /// <summary>Bit 4 of virtio-blk: VIRTIO_BLK_F_GEOMETRY.</summary>
    public const ulong BlockGeometry = 1UL << 4;

    /// <summary>Bit 5 of virtio-blk: VIRTIO_BLK_F_RO (the device is read-only).</summary>
    public const ulong BlockRo = 1UL << 5;

    /// <summary>Bit 6 of virtio-blk: VIRTIO_BLK_F_BLK_SIZE (config <c>blk_size</c> is valid).</summary>
    public const ulong BlockBlkSize = 1UL << 6;

    /// <summary>Bit 9 of virtio-blk: VIRTIO_BLK_F_FLUSH (cache flush command).</summary>
    public const ulong BlockFlush = 1UL << 9;

    /// <summary>Bit 10 of virtio-blk: VIRTIO_BLK_F_TOPOLOGY.</summary>
    public const ulong BlockTopology = 1UL << 10;

    /// <summary>Bit 11 of virtio-blk: VIRTIO_BLK_F_CONFIG_WCE (writeback mode in config).</summary>
    public const ulong BlockConfigWce = 1UL << 11;

    /// <summary>Bit 12 of virtio-blk: VIRTIO_BLK_F_MQ (config <c>num_queues</c>).</summary>
    public const ulong BlockMq = 1UL << 12;

    /// <summary>Bit 13 of virtio-blk: VIRTIO_BLK_F_DISCARD.</summary>
    public const ulong BlockDiscard = 1UL << 13;

    /// <summary>Bit 14 of virtio-blk: VIRTIO_BLK_F_WRITE_ZEROES.</summary>
    public const ulong BlockWriteZeroes = 1UL << 14;

    /// <summary>Bit 16 of virtio-blk: VIRTIO_BLK_F_SECURE_ERASE.</summary>
    public const ulong BlockSecureErase = 1UL << 16;
}
