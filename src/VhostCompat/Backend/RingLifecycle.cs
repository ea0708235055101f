using Microsoft.Extensions.Logging;
using VhostCompat.Memory;
using VhostCompat.Protocol;
using VhostCompat.Queues;
using VhostCompat.Virtio;

namespace VhostCompat.Backend;

/// <summary>
/// The rings of one connection and what they run on: starting a ring once it has memory, addresses, size and a kick;
/// stopping it; moving running rings to a replaced memory table; handing them the dirty log and the inflight buffer.
/// Every call into a running queue happens on its worker (<see cref="VirtqueueWorker.Invoke"/>).
/// </summary>
internal sealed class RingLifecycle
{
    private readonly VirtqueueSetup[] _rings;
    private readonly VhostUserDevice _device;
    private readonly Negotiation _negotiation;
    private readonly VhostUserBackendOptions _options;
    private readonly VhostUserWorkerPool _workers;
    private readonly ILogger _logger;

    public RingLifecycle(int queues, VhostUserDevice device, Negotiation negotiation, VhostUserBackendOptions options, VhostUserWorkerPool workers, ILogger logger)
    {
        _device = device;
        _negotiation = negotiation;
        _options = options;
        _workers = workers;
        _logger = logger;
        _rings = new VirtqueueSetup[queues];
        for (int i = 0; i < queues; i++)
        {
            _rings[i] = new VirtqueueSetup(i);
        }
    }

    /// <summary>Raised after a ring started (the session decides whether the interface is complete).</summary>
    public event Action<VirtqueueSetup>? RingStarted;

    public IReadOnlyList<VirtqueueSetup> Rings => _rings;

    public int Count => _rings.Length;

    /// <summary>The memory table in force (running rings hold their own reference to the one they use).</summary>
    public GuestMemoryTable Memory { get; private set; } = GuestMemoryTable.Empty;

    /// <summary>The installed dirty log, if any.</summary>
    public DirtyLog? Log { get; private set; }

    /// <summary>The inflight buffer starting queues attach to, if any.</summary>
    public InflightArea? Inflight { get; private set; }

    public bool AnyStarted => _rings.Any(r => r.Started);

    public bool TryGet(uint index, out VirtqueueSetup ring, out Outcome refused)
    {
        if (RequestRules.RingIndex(index, _rings.Length) is { } bad)
        {
            ring = null!;
            refused = Outcome.Reject(bad);
            return false;
        }

        ring = _rings[index];
        refused = default;
        return true;
    }

    /// <summary>Installs <paramref name="table"/>: running rings move to it (or stop when their memory went), waiting rings may start.</summary>
    public void InstallMemory(GuestMemoryTable table)
    {
        GuestMemoryTable old = Memory;
        Memory = table;
        ulong bytes = 0;
        foreach (var r in table.Regions)
        {
            bytes += r.Size;
        }

        VhostCompat.Log.MemoryTable(_logger, table.Count, bytes);
        foreach (var ring in _rings)
        {
            if (ring.Started && TranslationError(ring) is { } error)
            {
                VhostCompat.Log.QueueCannotStart(_logger, ring.Index, error);
                Stop(ring, "memory removed");
            }
            else if (ring.Started && ring.Queue is { } queue && table.TryAcquire())
            {
                string? moved = null;
                ring.Worker!.Invoke(() => moved = queue.ReplaceMemory(table));
                if (moved is null)
                {
                    ring.Lease?.Release();
                    ring.Lease = table;
                }
                else
                {
                    table.Release();
                    VhostCompat.Log.QueueCannotStart(_logger, ring.Index, moved);
                    Stop(ring, "memory replaced");
                }
            }
            else if (!ring.Started)
            {
                TryStart(ring, quiet: true);
            }
        }

        old.Release();
    }

    /// <summary>Makes <paramref name="log"/> the dirty log (running queues switch on their workers) and returns the previous one.</summary>
    public DirtyLog? ReplaceLog(DirtyLog? log)
    {
        DirtyLog? old = Log;
        Log = log;
        ApplyLogging();
        return old;
    }

    /// <summary>Hands the current log (or none) to every running queue, on its worker.</summary>
    public void ApplyLogging()
    {
        DirtyLog? log = _negotiation.Logging ? Log : null;
        foreach (var ring in _rings)
        {
            if (ring.Queue is { } queue && ring.Worker is { } worker)
            {
                bool usedLog = (ring.AddressFlags & VringAddressPayload.FlagLog) != 0;
                ulong usedAddress = ring.LogGuestAddress;
                worker.Invoke(() =>
                {
                    queue.SetLog(log);
                    queue.SetUsedRingLogging(usedLog, usedAddress);
                });
            }
        }
    }

    /// <summary>Installs the buffer queues attach when they start; running queues keep their own reference to the old one.</summary>
    public void ReplaceInflight(InflightArea? area)
    {
        InflightArea? old = Inflight;
        Inflight = area;
        old?.Release();
        if (area is not null)
        {
            VhostCompat.Log.InflightBuffer(_logger, area.QueueCount, area.QueueSize, area.Packed ? "packed" : "split", area.Size);
        }
    }

    /// <summary>Why the ring's areas cannot be translated through the current table, or null.</summary>
    public string? TranslationError(VirtqueueSetup ring)
    {
        bool packed = _negotiation.PackedRing;
        ulong n = (ulong)ring.Size;
        ulong descBytes = 16 * n;
        ulong availBytes = packed ? 4 : 6 + (2 * n);
        ulong usedBytes = packed ? 4 : 6 + (8 * n);
        if (!Memory.TryTranslateFrontendVirtual(ring.Descriptor, descBytes, out _))
        {
            return $"descriptor table 0x{ring.Descriptor:x}+{descBytes} is not inside guest memory";
        }

        if (!Memory.TryTranslateFrontendVirtual(ring.Available, availBytes, out _))
        {
            return $"driver area 0x{ring.Available:x}+{availBytes} is not inside guest memory";
        }

        if (!Memory.TryTranslateFrontendVirtual(ring.Used, usedBytes, out _))
        {
            return $"device area 0x{ring.Used:x}+{usedBytes} is not inside guest memory";
        }

        return null;
    }

    /// <summary>Starts the ring when it has everything it needs; otherwise logs what is missing (unless <paramref name="quiet"/>).</summary>
    public void TryStart(VirtqueueSetup ring, bool quiet)
    {
        if (ring.Started || !ring.KickSet)
        {
            return;
        }

        string? missing = ring.Size == 0 ? "no ring size" : !ring.AddressesSet ? "no ring addresses" : Memory.Count == 0 ? "no memory table" : null;
        missing ??= TranslationError(ring);
        if (missing is not null)
        {
            if (!quiet)
            {
                VhostCompat.Log.QueueCannotStart(_logger, ring.Index, missing);
            }

            return;
        }

        GuestMemoryTable memory = Memory;
        if (!memory.TryAcquire())
        {
            return;
        }

        ulong features = _negotiation.AckedFeatures;
        bool indirect = (features & VirtioFeatureBits.IndirectDesc) != 0;
        bool eventIndex = (features & VirtioFeatureBits.EventIdx) != 0;
        Virtqueue queue;
        try
        {
            queue = _negotiation.PackedRing
                ? new PackedVirtqueue(ring.Index, ring.Size, memory, ring.Descriptor, ring.Available, ring.Used, ring.Base, indirect, eventIndex)
                : new SplitVirtqueue(ring.Index, ring.Size, memory, ring.Descriptor, ring.Available, ring.Used, (ushort)ring.Base, indirect, eventIndex);
        }
        catch (ArgumentException ex)
        {
            memory.Release();
            VhostCompat.Log.QueueCannotStart(_logger, ring.Index, ex.Message);
            return;
        }

        queue.SetEnabled(ring.Enabled);
        queue.SetLog(_negotiation.Logging ? Log : null);
        queue.SetUsedRingLogging((ring.AddressFlags & VringAddressPayload.FlagLog) != 0, ring.LogGuestAddress);
        queue.SetCall(ring.CallDisabled ? null : ring.Call);
        queue.SetErr(ring.Err);
        ILogger logger = _logger;
        queue.OnBroken = (q, reason) =>
        {
            VhostCompat.Log.QueueBroken(logger, q.Index, reason);
            Metrics.BrokenQueues.Add(1);
        };
        AttachInflight(ring, queue);
        Metrics.Track(queue, queue.Index, () => queue.CompletedChains, () => queue.CompletedBytes, _device.DeviceType.ToString(), _options.SocketPath ?? $"fd{_options.InheritedFd}");
        ring.Lease = memory;
        ring.Queue = queue;
        ring.Worker = _workers.Next();
        ring.Started = true;
        VhostCompat.Log.QueueState(_logger, ring.Index, "started", ring.Size, ring.Enabled, ring.Base);
        _device.OnQueueStateChanged(ring.Info);
        VhostUserDevice device = _device;
        ring.Binding = ring.Worker.Attach(queue, ring.KickPolled ? null : ring.Kick, device.OnQueueKicked, device.OnQueueEnabledChanged, device.OnQueueStarted);
        RingStarted?.Invoke(ring);
    }

    /// <summary>
    /// Gives a starting queue its inflight region. A region that fails validation breaks the queue (the
    /// frontend sees its error fd) rather than letting it run untracked or on corrupt state.
    /// </summary>
    private void AttachInflight(VirtqueueSetup ring, Virtqueue queue)
    {
        if (Inflight is not { } area || !_negotiation.Acked(VhostUserProtocolFeatures.InflightShmfd))
        {
            return;
        }

        bool packed = _negotiation.PackedRing;
        string? error = area.Packed != packed
            ? $"queue {ring.Index}: the inflight buffer has the {(area.Packed ? "packed" : "split")} layout but the ring is {(packed ? "packed" : "split")}"
            : area.QueueRegion(ring.Index) == 0
                ? $"queue {ring.Index}: the inflight buffer has regions for {area.QueueCount} queues only"
                : null;
        if (error is null && area.TryAcquire())
        {
            ring.Inflight = area;
            uint frontendBase = queue.Base;
            error = queue.AttachInflight(area.QueueRegion(ring.Index), area.QueueSize);
            if (error is null)
            {
                VhostCompat.Log.InflightRecovered(_logger, ring.Index, queue.PendingResubmissions, frontendBase, queue.Base);
                ring.Base = queue.Base;
            }
        }

        if (error is not null)
        {
            queue.MarkBroken(error);
        }
    }

    /// <summary>Stops a running ring: after this the worker never touches the queue, its memory lease or inflight region again.</summary>
    public void Stop(VirtqueueSetup ring, string why)
    {
        if (!ring.Started)
        {
            return;
        }

        if (ring.Queue is { } queue && ring.Worker is { } worker)
        {
            worker.Detach(ring.Binding!, _device.OnQueueStopped);
            ring.Base = queue.Base;
            queue.ReleaseRetained();
            Metrics.Untrack(queue);
        }

        ring.Queue = null;
        ring.Worker = null;
        ring.Binding = null;
        ring.Lease?.Release();
        ring.Lease = null;
        ring.Inflight?.Release();
        ring.Inflight = null;
        ring.Started = false;
        VhostCompat.Log.QueueState(_logger, ring.Index, $"stopped ({why})", ring.Size, ring.Enabled, ring.Base);
        _device.OnQueueStateChanged(ring.Info);
    }

    /// <summary>Stops every ring; with <paramref name="reset"/> also returns each to its initial state (closing its fds).</summary>
    public void StopAll(string why, bool reset)
    {
        foreach (var r in _rings)
        {
            Stop(r, why);
            if (reset)
            {
                r.Reset();
            }
        }
    }

    /// <summary>Disconnect: every ring stopped and reset, the log, inflight buffer and memory released.</summary>
    public void Teardown()
    {
        StopAll("disconnect", reset: true);
        Log?.Release();
        Log = null;
        ReplaceInflight(null);
        GuestMemoryTable old = Memory;
        Memory = GuestMemoryTable.Empty;
        old.Release();
    }
}
