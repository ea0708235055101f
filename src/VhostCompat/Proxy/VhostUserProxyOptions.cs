using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Proxy;

/// <summary>
/// Options of a <see cref="VhostUserProxy"/>: where the frontend (QEMU) and the backend (DPDK, qemu-storage-daemon, …)
/// are reached, the interface to pin, where acked-state records live. Plain settable properties with defaults.
/// </summary>
public sealed class VhostUserProxyOptions
{
    /// <summary>Listen here for the frontend (QEMU <c>-chardev socket,path=…,reconnect=1</c>). Exactly one of this and <see cref="FrontendPath"/>.</summary>
    public string? ListenPath { get; set; }

    /// <summary>Connect to a frontend listening here (QEMU <c>-chardev socket,path=…,server=on</c>).</summary>
    public string? FrontendPath { get; set; }

    /// <summary>The backend listens here (DPDK <c>iface=…</c>, qemu-storage-daemon <c>addr.path=…</c>). Exactly one of this and <see cref="BackendListenPath"/>.</summary>
    public string? BackendPath { get; set; }

    /// <summary>Listen here for a backend that connects as a client (DPDK <c>client=1</c>).</summary>
    public string? BackendListenPath { get; set; }

    /// <summary>Permission bits of the sockets the proxy listens on (e.g. 0660 for a QEMU run by libvirt as another user); null: the umask's.</summary>
    public UnixFileMode? SocketMode { get; set; }

    /// <summary>Group of the sockets the proxy listens on: a name from /etc/group or a numeric gid; null: the process's group.</summary>
    public string? SocketGroup { get; set; }

    /// <summary>The device type behind the socket (vhost-user does not carry it).</summary>
    public VirtioDeviceType DeviceType { get; set; } = VirtioDeviceType.Net;

    /// <summary>The interface profile to pin (an id of <see cref="Catalog"/> or a value list); null = transparent, unless the record holds a profile.</summary>
    public string? CompatProfile { get; set; }

    /// <summary>Profiles of the backend (resolves <see cref="CompatProfile"/> ids; published by <c>--print-capabilities</c>).</summary>
    public ProfileCatalog? Catalog { get; set; }

    /// <summary>Directory of acked-state records; null keeps none (and checks nothing at a backend restart).</summary>
    public string? StateDirectory { get; set; }

    /// <summary>Record key; null derives it from <see cref="ListenPath"/> or <see cref="FrontendPath"/>.</summary>
    public string? StateKey { get; set; }

    /// <summary>Longest time one message may take to arrive once its first byte has (as in the SDK backend).</summary>
    public TimeSpan MessageTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Longest time the backend may take to answer a request (GET_VRING_BASE waits for in-flight I/O).</summary>
    public TimeSpan BackendReplyTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>First delay between attempts to reach the backend or the frontend; doubles up to <see cref="ReconnectMaxDelay"/>.</summary>
    public TimeSpan ReconnectInitialDelay { get; set; } = TimeSpan.FromMilliseconds(100);

    /// <summary>Longest delay between attempts (also how often a refused backend is checked again).</summary>
    public TimeSpan ReconnectMaxDelay { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>Refuse guest memory, log and inflight files that cannot be sealed against shrinking (as the SDK backend's option).</summary>
    public bool RequireSealedMemory { get; set; }

    /// <summary>Where every message is written decoded (<c>--trace</c>); null = no trace.</summary>
    public TextWriter? Trace { get; set; }

    /// <summary>Trace as JSON lines instead of text.</summary>
    public bool TraceJson { get; set; }

    /// <summary>Who may connect to the sockets the proxy listens on.</summary>
    internal Protocol.UnixSocketAccess? Access => Protocol.UnixSocketAccess.From(SocketMode, SocketGroup);

    /// <summary>The record key in use.</summary>
    internal string RecordKey => StateKey ?? AckedStateStore.DefaultKey(ListenPath ?? FrontendPath!);

    /// <summary>Checks the options; <see cref="ArgumentException"/> names the bad one.</summary>
    internal void Validate()
    {
        if ((ListenPath is null) == (FrontendPath is null))
        {
            throw new ArgumentException("exactly one of ListenPath (--listen) and FrontendPath (--connect) is required", nameof(ListenPath));
        }

        if ((BackendPath is null) == (BackendListenPath is null))
        {
            throw new ArgumentException("exactly one of BackendPath (--backend) and BackendListenPath (--backend-listen) is required", nameof(BackendPath));
        }

        if (MessageTimeout <= TimeSpan.Zero || BackendReplyTimeout <= TimeSpan.Zero || ReconnectInitialDelay <= TimeSpan.Zero || ReconnectMaxDelay < ReconnectInitialDelay)
        {
            throw new ArgumentException("timeouts and delays must be positive and ReconnectMaxDelay >= ReconnectInitialDelay", nameof(MessageTimeout));
        }

        _ = Protocol.UnixSocketAccess.From(SocketMode, SocketGroup); // an unknown group or a bad mode fails here

        if (Catalog is not null && Catalog.DeviceType != DeviceType)
        {
            throw new ArgumentException($"the catalog is for {VirtioFeatures.TypeLabel(Catalog.DeviceType)}, the proxy serves {VirtioFeatures.TypeLabel(DeviceType)}", nameof(Catalog));
        }

        if (StateDirectory is not null && !AckedStateStore.IsValidKey(RecordKey))
        {
            throw new ArgumentException($"record key '{RecordKey}' is not valid", nameof(StateKey));
        }
    }
}
