using Microsoft.Extensions.Logging;

namespace VhostCompat;

/// <summary>Every log message of the library, with stable event ids.</summary>
internal static partial class Log
{
    [LoggerMessage(1, LogLevel.Information, "Listening for a vhost-user frontend on {Path}")]
    public static partial void Listening(ILogger logger, string path);

    [LoggerMessage(2, LogLevel.Information, "Frontend connected ({Connection})")]
    public static partial void Connected(ILogger logger, string connection);

    [LoggerMessage(3, LogLevel.Information, "Frontend disconnected ({Connection}): {Reason}")]
    public static partial void Disconnected(ILogger logger, string connection, string reason);

    [LoggerMessage(4, LogLevel.Debug, "request {Request} flags=0x{Flags:x} size={Size} fds={Fds}")]
    public static partial void Request(ILogger logger, string request, uint flags, uint size, int fds);

    [LoggerMessage(5, LogLevel.Warning, "Refused request {Request}: {Reason}")]
    public static partial void Refused(ILogger logger, string request, string reason);

    [LoggerMessage(6, LogLevel.Error, "Closing the connection: {Reason}")]
    public static partial void ClosingOnError(ILogger logger, string reason);

    [LoggerMessage(7, LogLevel.Information, "Frontend acked virtio features 0x{Features:x} (offered 0x{Offered:x})")]
    public static partial void FeaturesAcked(ILogger logger, ulong features, ulong offered);

    [LoggerMessage(8, LogLevel.Information, "Frontend acked protocol features 0x{Features:x} (offered 0x{Offered:x})")]
    public static partial void ProtocolFeaturesAcked(ILogger logger, ulong features, ulong offered);

    [LoggerMessage(9, LogLevel.Information, "Memory table: {Count} region(s), {Bytes} bytes mapped")]
    public static partial void MemoryTable(ILogger logger, int count, ulong bytes);

    [LoggerMessage(10, LogLevel.Information, "Queue {Index} {State} (size {Size}, enabled {Enabled}, next avail {Base})")]
    public static partial void QueueState(ILogger logger, int index, string state, int size, bool enabled, uint @base);

    [LoggerMessage(11, LogLevel.Information, "Device status 0x{Status:x2}")]
    public static partial void Status(ILogger logger, byte status);

    [LoggerMessage(12, LogLevel.Warning, "Connecting to {Path} failed ({Reason}); retrying in {DelayMs} ms")]
    public static partial void ConnectRetry(ILogger logger, string path, string reason, long delayMs);

    [LoggerMessage(13, LogLevel.Warning, "Removed stale socket file {Path}")]
    public static partial void StaleSocketRemoved(ILogger logger, string path);

    [LoggerMessage(14, LogLevel.Error, "Unexpected error in the session: {Message}")]
    public static partial void SessionFault(ILogger logger, Exception exception, string message);

    [LoggerMessage(15, LogLevel.Warning, "Queue {Index} cannot start: {Reason}")]
    public static partial void QueueCannotStart(ILogger logger, int index, string reason);

    [LoggerMessage(16, LogLevel.Error, "Queue {Index} is broken: {Reason}")]
    public static partial void QueueBroken(ILogger logger, int index, string reason);

    [LoggerMessage(17, LogLevel.Information, "Loaded acked-state record {Key}: features 0x{Features:x}, profile {Profile}")]
    public static partial void RecordLoaded(ILogger logger, string key, ulong features, string profile);

    [LoggerMessage(18, LogLevel.Information, "Saved acked-state record {Key}: features 0x{Features:x}")]
    public static partial void RecordSaved(ILogger logger, string key, ulong features);

    [LoggerMessage(19, LogLevel.Error, "Could not save acked-state record {Key}: {Reason}")]
    public static partial void RecordSaveFailed(ILogger logger, string key, string reason);

    [LoggerMessage(20, LogLevel.Information, "Inflight buffer: {Queues} {Layout} queues of {QueueSize} entries ({Bytes} bytes)")]
    public static partial void InflightBuffer(ILogger logger, int queues, int queueSize, string layout, ulong bytes);

    [LoggerMessage(21, LogLevel.Information, "Queue {Index}: inflight region attached, {Resubmit} chains to resubmit (frontend base 0x{FrontendBase:x}, resuming at 0x{Base:x})")]
    public static partial void InflightRecovered(ILogger logger, int index, int resubmit, uint frontendBase, uint @base);

    [LoggerMessage(22, LogLevel.Warning, "Guest memory region at 0x{GuestPhysicalAddress:x} (+0x{Size:x}) is a file that cannot be sealed against shrinking: a frontend truncating it would crash this backend (RequireSealedMemory refuses such files)")]
    public static partial void UnsealableRegion(ILogger logger, ulong guestPhysicalAddress, ulong size);

    [LoggerMessage(23, LogLevel.Debug, "Guest memory region at 0x{GuestPhysicalAddress:x} (+0x{Size:x}): {Sealing}")]
    public static partial void RegionSealing(ILogger logger, ulong guestPhysicalAddress, ulong size, string sealing);

    [LoggerMessage(24, LogLevel.Information, "Guest writes beyond the previous dirty log (0x{Start:x}..0x{End:x}, memory added while logging) are carried into its replacement")]
    public static partial void DirtyLogOverflowCarried(ILogger logger, ulong start, ulong end);

    [LoggerMessage(25, LogLevel.Information, "Device state {Direction}: {Bytes} bytes (device state version {Version}) in {Milliseconds:F1} ms")]
    public static partial void DeviceStateTransferred(ILogger logger, string direction, int bytes, uint version, double milliseconds);

    [LoggerMessage(26, LogLevel.Information, "Refused request {Request}: {Reason} (a frontend searching for the largest ring size; further refusals on this connection are logged at Debug)")]
    public static partial void RingSizeRefused(ILogger logger, string request, string reason);

    [LoggerMessage(27, LogLevel.Debug, "Refused request {Request}: {Reason}")]
    public static partial void RingSizeRefusedAgain(ILogger logger, string request, string reason);

    [LoggerMessage(40, LogLevel.Warning, "The frontend acked {Names} (0x{Bits:x}), which this backend never offered; accepted and ignored: the frontend implements it with the ring messages this backend serves (docs/protocol.md, frontend quirks)")]
    public static partial void UnofferedBitsIgnored(ILogger logger, string names, ulong bits);

    [LoggerMessage(41, LogLevel.Information, "Interface complete ({Trigger}): saving the acked-state record")]
    public static partial void RecordTrigger(ILogger logger, string trigger);

    [LoggerMessage(42, LogLevel.Information, "Sent {Request} to the frontend on the backend-request channel")]
    public static partial void BackendRequestSent(ILogger logger, string request);

    [LoggerMessage(43, LogLevel.Warning, "Could not send {Request} to the frontend: {Reason}")]
    public static partial void BackendRequestFailed(ILogger logger, string request, string reason);

    [LoggerMessage(100, LogLevel.Information, "Proxy connected to the {Peer} on {Path}")]
    public static partial void ProxyConnected(ILogger logger, string peer, string path);

    [LoggerMessage(101, LogLevel.Information, "Proxy checked the backend on {Path}: it offers 0x{Features:x}, the frontend will see 0x{Offered:x} (profile {Profile})")]
    public static partial void ProxyBackendChecked(ILogger logger, string path, ulong features, ulong offered, string profile);

    [LoggerMessage(102, LogLevel.Error, "Proxy refused the backend on {Path}; the frontend is kept out until a backend can serve it: {Problems}")]
    public static partial void ProxyBackendRefused(ILogger logger, string path, string problems);

    [LoggerMessage(103, LogLevel.Warning, "Proxy shield refused {Request}: {Reason}")]
    public static partial void ProxyShieldRefused(ILogger logger, string request, string reason);

    [LoggerMessage(104, LogLevel.Information, "Proxy session {Session} ended: {Reason}")]
    public static partial void ProxySessionEnded(ILogger logger, uint session, string reason);
}
