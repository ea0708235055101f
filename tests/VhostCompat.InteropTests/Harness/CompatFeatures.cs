namespace VhostCompat.InteropTests.Harness;

/// <summary>Feature sets the compat interop tests compare against, written down independently of the SDK's tables.</summary>
public static class CompatFeatures
{
    /// <summary>
    /// QEMU 7.2's <c>user_feature_bits</c> (hw/net/vhost_net.c): the only virtio-net bits QEMU takes from a vhost-user
    /// backend's GET_FEATURES. Every other bit the guest sees (mac, status, ctrl_vq, ctrl_rx, ...) QEMU emulates itself.
    /// notify_on_empty 24, indirect_desc 28, event_idx 29, any_layout 27, version_1 32, csum 0, guest_csum 1, gso 6,
    /// guest_tso4 7, guest_tso6 8, guest_ecn 9, guest_ufo 10, host_tso4 11, host_tso6 12, host_ecn 13, host_ufo 14,
    /// mrg_rxbuf 15, mtu 3, iommu_platform 33, packed 34, ring_reset 40, rss 60, hash_report 57, guest_announce 21, mq 22.
    /// </summary>
    public static readonly ulong Qemu72VhostUserNetBits = Bits(24, 28, 29, 27, 32, 0, 1, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 3, 33, 34, 40, 60, 57, 21, 22);

    /// <summary>samples/Net profiles (NetCatalog): v1 = version_1,mrg_rxbuf; v2 = v1 + indirect_desc,event_idx; v3 = v2 + guest_announce,packed,in_order.</summary>
    public static readonly ulong NetV1 = Bits(32, 15);

    public static readonly ulong NetV2 = NetV1 | Bits(28, 29);

    public static readonly ulong NetV3 = NetV2 | Bits(21, 34, 35);

    /// <summary>
    /// DPDK 22.11's vhost PMD offer with default devargs (drivers/net/vhost + lib/vhost): VIRTIO_NET_SUPPORTED_FEATURES of
    /// lib/vhost/vhost.h — mrg_rxbuf 15, any_layout 27, ctrl_vq 17, ctrl_rx 18, guest_announce 21, mq 22, version_1 32,
    /// log_all 26, protocol_features 30, gso 6, host_tso4 11, host_tso6 12, host_ufo 14, host_ecn 13, csum 0, guest_csum 1,
    /// guest_tso4 7, guest_tso6 8, guest_ufo 10, guest_ecn 9, indirect_desc 28, event_idx 29, mtu 3, in_order 35,
    /// iommu_platform 33, packed 34 — minus host_tso4/host_tso6 (the PMD's tso=0 default) and iommu_platform
    /// (registered without RTE_VHOST_USER_IOMMU_SUPPORT).
    /// </summary>
    public static readonly ulong Dpdk2211VhostPmd =
        Bits(15, 27, 17, 18, 21, 22, 32, 26, 30, 6, 11, 12, 14, 13, 0, 1, 7, 8, 10, 9, 28, 29, 3, 35, 33, 34) & ~Bits(11, 12, 33);

    /// <summary>
    /// DPDK 22.11's VHOST_USER_PROTOCOL_FEATURES (lib/vhost/vhost_user.h): mq 0, log_shmfd 1, rarp 2, reply_ack 3,
    /// net_mtu 4, slave_req 5, crypto_session 7, slave_send_fd 10, host_notifier 11, pagefault 8, status 16 — minus
    /// pagefault (only with RTE_VHOST_USER_POSTCOPY_SUPPORT).
    /// </summary>
    public static readonly ulong Dpdk2211VhostPmdProtocol = Bits(0, 1, 2, 3, 4, 5, 7, 10, 11, 8, 16) & ~Bits(8);

    /// <summary>vhost-user protocol feature bits (spec order) with the SDK's canonical names, to check a tool's decoding.</summary>
    public static readonly IReadOnlyDictionary<int, string> ProtocolFeatureNames = new Dictionary<int, string>
    {
        [0] = "mq", [1] = "log_shmfd", [2] = "rarp", [3] = "reply_ack", [4] = "mtu", [5] = "backend_req", [6] = "cross_endian",
        [7] = "crypto_session", [8] = "pagefault", [9] = "config", [10] = "backend_send_fd", [11] = "host_notifier",
        [12] = "inflight_shmfd", [13] = "reset_device", [14] = "inband_notifications", [15] = "configure_mem_slots", [16] = "status",
    };

    public static ulong Bits(params int[] bits) => bits.Aggregate(0UL, (v, b) => v | (1UL << b));

    /// <summary>Canonical feature names of the bits in <paramref name="features"/> (the SDK's formatter, for messages only).</summary>
    public static string Names(ulong features) => VirtioNetFeatures.Hex(features) + " (" + VhostCompat.Virtio.VirtioFeatures.Format(VhostCompat.Virtio.VirtioDeviceType.Net, features) + ")";
}
