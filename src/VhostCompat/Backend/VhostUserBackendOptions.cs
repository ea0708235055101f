namespace VhostCompat.Backend;

/// <summary>How the backend reaches its frontend.</summary>
public enum VhostUserSocketMode
{
    /// <summary>The backend listens on <see cref="VhostUserBackendOptions.SocketPath"/>; the frontend connects (QEMU chardev without server=on).</summary>
    Server,

    /// <summary>The backend connects to a listening frontend (QEMU chardev server=on, DPDK virtio-user server=1) and reconnects after it goes away.</summary>
    Client,
}

/// <summary>Options of a vhost-user backend. Plain settable properties with working defaults.</summary>
public sealed class VhostUserBackendOptions
{
    /// <summary>Unix socket path to listen on (server mode) or connect to (client mode).</summary>
    public string? SocketPath { get; set; }

    /// <summary>Server or client mode. Default: server.</summary>
    public VhostUserSocketMode Mode { get; set; } = VhostUserSocketMode.Server;

    /// <summary>
    /// Server mode: permission bits of the listening socket, e.g. <c>UserRead | UserWrite | GroupRead | GroupWrite</c>
    /// (0660) so a frontend running as another user in <see cref="SocketGroup"/> can connect (libvirt runs QEMU as
    /// <c>libvirt-qemu</c>). Null: what the umask gives.
    /// </summary>
    public UnixFileMode? SocketMode { get; set; }

    /// <summary>Server mode: group of the listening socket, a name from /etc/group or a numeric gid. Null: the process's group.</summary>
    public string? SocketGroup { get; set; }

    /// <summary>
    /// An inherited socket fd (QEMU's <c>--fd</c> convention): either an already-connected socket
    /// (one session is served) or a listening socket (connections are accepted on it).
    /// </summary>
    public int? InheritedFd { get; set; }

    /// <summary>Client mode: first delay between connection attempts; doubles up to <see cref="ReconnectMaxDelay"/>.</summary>
    public TimeSpan ReconnectInitialDelay { get; set; } = TimeSpan.FromMilliseconds(100);

    /// <summary>Client mode: longest delay between connection attempts.</summary>
    public TimeSpan ReconnectMaxDelay { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Client mode: reconnect after the frontend goes away (true) or stop (false).</summary>
    public bool Reconnect { get; set; } = true;

    /// <summary>Longest time a started message may take to arrive completely; a stalled peer is disconnected.</summary>
    public TimeSpan MessageTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Memory slots offered through GET_MAX_MEM_SLOTS (CONFIGURE_MEM_SLOTS). QEMU refuses a value that decreases.</summary>
    public int MaxMemorySlots { get; set; } = 32;

    /// <summary>Offer CONFIGURE_MEM_SLOTS (ADD/REM_MEM_REG). Default: true.</summary>
    public bool OfferMemorySlots { get; set; } = true;

    /// <summary>
    /// Pin the guest-visible interface: a profile id from the device's catalog (<c>org.example.vnet.v2</c>)
    /// or a value list (<c>mrg_rxbuf=on,max_ring=256,...</c>). GET_FEATURES, GET_QUEUE_NUM, GET_CONFIG and
    /// the ring-size limit then follow the profile, whatever else the build can do. Null: the catalog's
    /// latest, or the device's whole capability without a catalog.
    /// </summary>
    public string? CompatProfile { get; set; }

    /// <summary>
    /// Directory of acked-state records. When set, what the frontend acked is saved crash-safely once the
    /// driver is up, and on start a saved record pins the same interface again — or the backend refuses to
    /// start, naming what this build can no longer offer.
    /// </summary>
    public string? StateDirectory { get; set; }

    /// <summary>Record key (e.g. VM UUID + device name). Default: derived from the socket path.</summary>
    public string? StateKey { get; set; }

    /// <summary>Data-path threads to run queues on; shared between backends when set. When null the backend creates its own pool of <see cref="Workers"/> threads.</summary>
    public VhostUserWorkerPool? WorkerPool { get; set; }

    /// <summary>Worker threads of the backend's own pool (when <see cref="WorkerPool"/> is null). Default 1.</summary>
    public int Workers { get; set; } = 1;

    /// <summary>Busy-poll rings instead of waiting for kicks (own pool only): lowest latency, one core per worker.</summary>
    public bool BusyPoll { get; set; }

    /// <summary>
    /// Refuse guest memory, log and inflight files that cannot be sealed against shrinking. A region's file that
    /// shrinks after it was mapped makes the next access raise SIGBUS, which kills a .NET process. The backend adds
    /// F_SEAL_SHRINK to every sealable memfd it maps (QEMU's memory-backend-memfd arrives sealed already); with this
    /// option it refuses every file it cannot seal: memfds created without MFD_ALLOW_SEALING (DPDK virtio-user
    /// <c>--no-huge</c>), hugetlbfs and tmpfs files, other file systems. Default: false (such files are accepted and
    /// a warning is logged for each region).
    /// </summary>
    public bool RequireSealedMemory { get; set; }

    /// <summary>Validates the options; throws <see cref="ArgumentException"/> naming the bad setting.</summary>
    public void Validate()
    {
        if (InheritedFd is null && string.IsNullOrEmpty(SocketPath))
        {
            throw new ArgumentException("either SocketPath or InheritedFd must be set", nameof(SocketPath));
        }

        if (SocketPath is not null && System.Text.Encoding.UTF8.GetByteCount(Path.GetFullPath(SocketPath)) > 107)
        {
            throw new ArgumentException($"SocketPath '{SocketPath}' is longer than the 107 bytes a Unix socket address holds", nameof(SocketPath));
        }

        if (InheritedFd is < 0)
        {
            throw new ArgumentException($"InheritedFd {InheritedFd} is negative", nameof(InheritedFd));
        }

        _ = Protocol.UnixSocketAccess.From(SocketMode, SocketGroup); // an unknown group or a bad mode fails here, not at bind

        if (MaxMemorySlots is < 1 or > 509)
        {
            throw new ArgumentException($"MaxMemorySlots {MaxMemorySlots} outside 1..509", nameof(MaxMemorySlots));
        }

        if (Workers is < 1 or > 64)
        {
            throw new ArgumentException($"Workers {Workers} outside 1..64", nameof(Workers));
        }

        if (MessageTimeout <= TimeSpan.Zero || ReconnectInitialDelay <= TimeSpan.Zero || ReconnectMaxDelay < ReconnectInitialDelay)
        {
            throw new ArgumentException("MessageTimeout and ReconnectInitialDelay must be positive and ReconnectMaxDelay >= ReconnectInitialDelay", MessageTimeout <= TimeSpan.Zero ? nameof(MessageTimeout) : nameof(ReconnectMaxDelay));
        }
    }
}
