namespace VhostCompat.Virtio;

/// <summary>
/// vhost-user protocol feature bits (GET/SET_PROTOCOL_FEATURES), as numbered in the vhost-user
/// specification. A backend offers only the bits it fully implements.
/// </summary>
[Flags]
public enum VhostUserProtocolFeatures : ulong
{
    /// <summary>No protocol features.</summary>
    None = 0,

    /// <summary>Bit 0: GET_QUEUE_NUM is available.</summary>
    Mq = 1UL << 0,

    /// <summary>Bit 1: the dirty log is passed as a shared-memory fd in SET_LOG_BASE.</summary>
    LogShmfd = 1UL << 1,

    /// <summary>Bit 2: SEND_RARP.</summary>
    Rarp = 1UL << 2,

    /// <summary>Bit 3: the NEED_REPLY flag is honoured with an acknowledgement.</summary>
    ReplyAck = 1UL << 3,

    /// <summary>Bit 4: NET_SET_MTU.</summary>
    Mtu = 1UL << 4,

    /// <summary>Bit 5: the back-end channel (SET_BACKEND_REQ_FD).</summary>
    BackendReq = 1UL << 5,

    /// <summary>Bit 6: SET_VRING_ENDIAN.</summary>
    CrossEndian = 1UL << 6,

    /// <summary>Bit 7: crypto session messages.</summary>
    CryptoSession = 1UL << 7,

    /// <summary>Bit 8: postcopy migration (userfaultfd).</summary>
    Pagefault = 1UL << 8,

    /// <summary>Bit 9: GET_CONFIG / SET_CONFIG and config-change notifications.</summary>
    Config = 1UL << 9,

    /// <summary>Bit 10: the back-end may attach fds to back-end channel messages.</summary>
    BackendSendFd = 1UL << 10,

    /// <summary>Bit 11: VRING_HOST_NOTIFIER_MSG.</summary>
    HostNotifier = 1UL << 11,

    /// <summary>Bit 12: GET_INFLIGHT_FD / SET_INFLIGHT_FD.</summary>
    InflightShmfd = 1UL << 12,

    /// <summary>Bit 13: RESET_DEVICE.</summary>
    ResetDevice = 1UL << 13,

    /// <summary>Bit 14: in-band notifications (VRING_KICK, VRING_CALL/ERR on the back-end channel).</summary>
    InbandNotifications = 1UL << 14,

    /// <summary>Bit 15: GET_MAX_MEM_SLOTS, ADD_MEM_REG, REM_MEM_REG.</summary>
    ConfigureMemSlots = 1UL << 15,

    /// <summary>Bit 16: SET_STATUS / GET_STATUS.</summary>
    Status = 1UL << 16,

    /// <summary>Bit 17: Xen mmap fields in memory regions.</summary>
    XenMmap = 1UL << 17,

    /// <summary>Bit 18: shared objects (dma-buf).</summary>
    SharedObject = 1UL << 18,

    /// <summary>Bit 19: SET_DEVICE_STATE_FD / CHECK_DEVICE_STATE.</summary>
    DeviceState = 1UL << 19,

    /// <summary>Bit 20: in-flight requests may be left suspended (and migrated) when a ring is stopped. Never offered.</summary>
    GetVringBaseInflight = 1UL << 20,

    /// <summary>Bit 21: ring and region addresses are guest-physical instead of frontend user addresses. Never offered.</summary>
    GpaAddresses = 1UL << 21,

    /// <summary>Bit 22: VIRTIO Shared Memory Regions (GET_SHMEM_CONFIG, back-end SHMEM_MAP/UNMAP). Never offered.</summary>
    Shmem = 1UL << 22,

    /// <summary>Bit 23: GET_VRING_BASE_SKIP_DRAIN (stop a ring without draining in-flight I/O). Never offered.</summary>
    GetVringBaseSkipDrain = 1UL << 23,
}
