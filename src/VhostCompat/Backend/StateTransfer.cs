using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Win32.SafeHandles;
using VhostCompat.Interop;
using VhostCompat.Memory;
using VhostCompat.Protocol;

namespace VhostCompat.Backend;

/// <summary>
/// Device-state transfer (DEVICE_STATE): SET_DEVICE_STATE_FD starts saving (direction 0) the device's wrapped state
/// into the frontend's pipe, or loading (1) it from there, in the background while the frontend drains or fills the
/// pipe; CHECK_DEVICE_STATE reports how it ended.
/// </summary>
internal sealed class StateTransfer
{
    /// <summary>The reply's "error, no fd returned" and "success, no fd of our own" values (bit 8: no fd).</summary>
    private const ulong Failed = 0x100 | 1, Started = 0x100;

    private readonly VhostUserDevice _device;
    private readonly ILogger _logger;
    private Task<string?>? _transfer;

    public StateTransfer(VhostUserDevice device, ILogger logger)
    {
        _device = device;
        _logger = logger;
    }

    public Outcome Start(DeviceStateTransferPayload t, VhostUserMessage message, bool ringsRunning)
    {
        if (t.Direction > 1 || t.Phase != 0 || ringsRunning)
        {
            // Unknown direction or phase; or rings running: the state is only consistent while they are stopped.
            return Outcome.Reply(U64Payload.Encode(Failed));
        }

        FileDescriptor fd = message.TakeFd(0);
        var handle = new SafeFileHandle(fd.Detach(), ownsHandle: true);
        VhostUserDevice device = _device;
        ILogger logger = _logger;
        _transfer = t.Direction == 0
            ? Task.Run(() => Save(handle, device, logger))
            : Task.Run(() => Load(handle, device, logger));
        return Outcome.Reply(U64Payload.Encode(Started));
    }

    public Outcome Check()
    {
        Task<string?>? transfer = _transfer;
        _transfer = null;
        string? error;
        if (transfer is null)
        {
            error = "no device state transfer was started";
        }
        else if (!transfer.Wait(TimeSpan.FromSeconds(10)))
        {
            error = "the device state transfer did not finish within 10 s";
        }
        else
        {
            error = transfer.IsFaulted ? transfer.Exception!.InnerException!.Message : transfer.Result;
        }

        if (error is not null)
        {
            Log.Refused(_logger, "CHECK_DEVICE_STATE", error);
            return Outcome.Reply(U64Payload.Encode(1));
        }

        return Outcome.Reply(U64Payload.Encode(0));
    }

    private static string? Save(SafeFileHandle handle, VhostUserDevice device, ILogger logger)
    {
        long started = Stopwatch.GetTimestamp();
        using var stream = new FileStream(handle, FileAccess.Write, 1);
        byte[] blob = DeviceStateBlob.Wrap((uint)device.DeviceType, device.StateVersion, device.SaveState());
        stream.Write(blob);
        Log.DeviceStateTransferred(logger, "saved", blob.Length, device.StateVersion, Stopwatch.GetElapsedTime(started).TotalMilliseconds);
        return null;
    }

    private static string? Load(SafeFileHandle handle, VhostUserDevice device, ILogger logger)
    {
        long started = Stopwatch.GetTimestamp();
        using var stream = new FileStream(handle, FileAccess.Read, 1);
        using var buffer = new MemoryStream();
        var chunk = new byte[65536];
        int n;
        while ((n = stream.Read(chunk)) > 0)
        {
            if (buffer.Length + n > DeviceStateBlob.MaxPayload + DeviceStateBlob.HeaderLength + DeviceStateBlob.DigestLength)
            {
                return "device state exceeds the size limit";
            }

            buffer.Write(chunk, 0, n);
        }

        string? error = DeviceStateBlob.TryUnwrap(buffer.GetBuffer().AsSpan(0, (int)buffer.Length), (uint)device.DeviceType, out uint version, out ReadOnlySpan<byte> payload);
        if (error is not null)
        {
            return error;
        }

        if (!device.LoadState(version, payload))
        {
            return $"the device refused state version {version} (it writes version {device.StateVersion})";
        }

        Log.DeviceStateTransferred(logger, "loaded", (int)buffer.Length, version, Stopwatch.GetElapsedTime(started).TotalMilliseconds);
        return null;
    }
}

/// <summary>The inflight buffer (INFLIGHT_SHMFD): GET_INFLIGHT_FD creates one, SET_INFLIGHT_FD maps the frontend's after a reconnect.</summary>
internal sealed class InflightRequests
{
    private readonly RingLifecycle _rings;
    private readonly Negotiation _negotiation;
    private readonly VhostUserBackendOptions _options;
    private readonly ushort _maxQueueSize;

    public InflightRequests(RingLifecycle rings, Negotiation negotiation, VhostUserBackendOptions options, ushort maxQueueSize)
    {
        _rings = rings;
        _negotiation = negotiation;
        _options = options;
        _maxQueueSize = maxQueueSize;
    }

    public Outcome Get(InflightDescriptionPayload d)
    {
        InflightArea? area = InflightArea.Create(d.NumQueues, d.QueueSize, _negotiation.PackedRing, _rings.Count, _maxQueueSize, out FileDescriptor? fd, out string error);
        if (area is null)
        {
            return Outcome.Reject(error);
        }

        _rings.ReplaceInflight(area);
        return Outcome.Reply(new InflightDescriptionPayload(area.Size, 0, area.QueueCount, area.QueueSize).Encode(), fd!);
    }

    public Outcome Set(InflightDescriptionPayload d, VhostUserMessage message)
    {
        using FileDescriptor fd = message.TakeFd(0);
        InflightArea? area = InflightArea.TryMap(d, fd, _negotiation.PackedRing, _rings.Count, _maxQueueSize, _options.RequireSealedMemory, out string error);
        if (area is null)
        {
            return Outcome.Reject(error);
        }

        _rings.ReplaceInflight(area);
        return Outcome.Ok;
    }
}
