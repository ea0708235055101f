using System.Runtime.CompilerServices;
using DirtyLog = VhostCompat.Memory.DirtyLog;

namespace VhostCompat.Queues;

// Migration: the dirty log this queue marks its guest writes in (buffers and its own ring).
public abstract partial class Virtqueue
{
    private volatile DirtyLog? _log;
    private bool _logUsed;
    private ulong _logUsedAddress;

    /// <summary>The dirty log while the frontend has VHOST_F_LOG_ALL on (set on the worker; read by any thread that writes a chain).</summary>
    private protected DirtyLog? DirtyLog => _log;

    internal void SetLog(DirtyLog? log) => _log = log;

    /// <summary>SET_VRING_ADDR's logging flag and the guest address of the used ring (worker thread only).</summary>
    internal void SetUsedRingLogging(bool enabled, ulong guestAddress)
    {
        _logUsed = enabled;
        _logUsedAddress = guestAddress;
    }

    /// <summary>Marks a write at <paramref name="offset"/> bytes into the used ring (split) or device-written ring (packed).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private protected void LogRingWrite(ulong offset, ulong length)
    {
        if (_logUsed)
        {
            MarkDirty(_logUsedAddress + offset, length);
        }
    }

    /// <summary>
    /// Marks a guest write in the log current at this moment. A log retired by SET_LOG_BASE after it was read here is
    /// never written: the replacement is already installed then, so the mark goes there. No log: nothing to do.
    /// </summary>
    internal void MarkDirty(ulong gpa, ulong length)
    {
        for (DirtyLog? log = _log; log is not null; log = _log)
        {
            if (log.TryMark(gpa, length))
            {
                return;
            }

            if (ReferenceEquals(log, _log))
            {
                return; // retired and not replaced for this queue (logging being switched off): nobody reads it
            }
        }
    }
}
