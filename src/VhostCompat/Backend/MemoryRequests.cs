using Microsoft.Extensions.Logging;
using VhostCompat.Interop;
using VhostCompat.Memory;
using VhostCompat.Protocol;

namespace VhostCompat.Backend;

/// <summary>
/// Guest memory and the dirty log: SET_MEM_TABLE (all or nothing), ADD_MEM_REG / REM_MEM_REG (CONFIGURE_MEM_SLOTS)
/// and SET_LOG_BASE. Regions are validated and mapped here; the new table is installed through
/// <see cref="RingLifecycle.InstallMemory"/>, which moves the running rings onto it.
/// </summary>
internal sealed class MemoryRequests
{
    private readonly RingLifecycle _rings;
    private readonly Negotiation _negotiation;
    private readonly VhostUserBackendOptions _options;
    private readonly ILogger _logger;

    public MemoryRequests(RingLifecycle rings, Negotiation negotiation, VhostUserBackendOptions options, ILogger logger)
    {
        _rings = rings;
        _negotiation = negotiation;
        _options = options;
        _logger = logger;
    }

    public Outcome SetTable(VhostUserMessage message)
    {
        ReadOnlySpan<byte> p = message.Payload;
        int count = (int)MemoryTablePayload.ReadCount(p);
        var descriptions = new MemoryRegionPayload[count];
        for (int i = 0; i < count; i++)
        {
            descriptions[i] = MemoryTablePayload.ReadRegion(p, i);
            if (GuestMemoryRegion.ValidateDescription(descriptions[i]) is { } bad)
            {
                return Outcome.Reject($"region {i}: {bad}");
            }
        }

        if (GuestMemoryTable.FindOverlap(descriptions) is { } overlap)
        {
            return Outcome.Reject(overlap);
        }

        var mapped = new GuestMemoryRegion[count];
        for (int i = 0; i < count; i++)
        {
            using FileDescriptor fd = message.TakeFd(i);
            GuestMemoryRegion? region = GuestMemoryRegion.TryMap(descriptions[i], fd, _options.RequireSealedMemory, out string error);
            if (region is null)
            {
                // All or nothing: the previous table stays in force.
                for (int j = 0; j < i; j++)
                {
                    mapped[j].Release();
                }

                return Outcome.Reject($"region {i}: {error}");
            }

            mapped[i] = region;
            ReportSealing(region);
        }

        _rings.InstallMemory(new GuestMemoryTable(mapped));
        return Outcome.Ok;
    }

    public Outcome AddRegion(VhostUserMessage message)
    {
        GuestMemoryTable memory = _rings.Memory;
        MemoryRegionPayload d = SingleRegionPayload.Read(message.Payload);
        if (GuestMemoryRegion.ValidateDescription(d) is { } bad)
        {
            return Outcome.Reject(bad);
        }

        if (memory.Regions.Any(r => r.Matches(d)))
        {
            // QEMU 7.2 sends the same ADD_MEM_REG once per queue pair: an identical region is already in place.
            return Outcome.Ok;
        }

        if (memory.Count >= _options.MaxMemorySlots)
        {
            return Outcome.Reject($"all {_options.MaxMemorySlots} memory slots are in use");
        }

        var all = memory.Regions.Select(r => r.Description).Append(d).ToArray();
        if (GuestMemoryTable.FindOverlap(all) is { } overlap)
        {
            return Outcome.Reject($"new region overlaps an existing one ({overlap})");
        }

        using FileDescriptor fd = message.TakeFd(0);
        GuestMemoryRegion? region = GuestMemoryRegion.TryMap(d, fd, _options.RequireSealedMemory, out string error);
        if (region is null)
        {
            return Outcome.Reject(error);
        }

        ReportSealing(region);
        foreach (var r in memory.Regions)
        {
            r.AddRef();
        }

        _rings.InstallMemory(new GuestMemoryTable([.. memory.Regions, region]));
        return Outcome.Ok;
    }

    public Outcome RemoveRegion(MemoryRegionPayload d)
    {
        GuestMemoryTable memory = _rings.Memory;
        GuestMemoryRegion? match = memory.Regions.FirstOrDefault(r => r.Matches(d));
        if (match is null)
        {
            // Duplicate removals (QEMU 7.2 multi-queue) are harmless.
            return Outcome.Ok;
        }

        var keep = memory.Regions.Where(r => !ReferenceEquals(r, match)).ToArray();
        foreach (var r in keep)
        {
            r.AddRef();
        }

        _rings.InstallMemory(new GuestMemoryTable(keep));
        return Outcome.Ok;
    }

    public Outcome SetLogBase(VhostUserMessage message)
    {
        var d = LogDescriptionPayload.Read(message.Payload);
        using FileDescriptor fd = message.TakeFd(0);
        DirtyLog? log = DirtyLog.TryMap(d, fd, _rings.Memory, _options.RequireSealedMemory, out string error);
        bool logging = _negotiation.Logging;
        if (log is null)
        {
            // QEMU ignores the reply's value and releases its previous log right after it: if one is installed (or
            // logging is on), marks would keep going where nobody reads. Close, so that the migration fails loudly.
            return logging || _rings.Log is not null
                ? Outcome.Close($"replacement dirty log refused while {(logging ? "logging is on" : "a log is installed")}: {error}")
                : Outcome.Reject(error);
        }

        // Every queue switches to the new log on its worker (Invoke waits); then the old log is retired, which waits
        // for marks still being written into it from other threads. Only then is the reply sent: once QEMU has it, it
        // reads the old log one last time and frees it, so nothing may be marked there afterwards.
        DirtyLog? old = _rings.ReplaceLog(log);
        if (old is not null)
        {
            old.Retire();
            if (old.Overflow is { } carried)
            {
                Log.DirtyLogOverflowCarried(_logger, carried.First << DirtyLog.PageShift, (carried.Last + 1) << DirtyLog.PageShift);
            }

            old.CarryOverflowTo(log);
            old.Release();
        }

        // With LOG_SHMFD the frontend waits for a reply to SET_LOG_BASE (QEMU checks only its request code).
        return Outcome.Reply(U64Payload.Encode(0));
    }

    private void ReportSealing(GuestMemoryRegion region)
    {
        if (region.Sealing == FileSealing.Unsealable)
        {
            Log.UnsealableRegion(_logger, region.GuestPhysicalAddress, region.Size);
        }
        else
        {
            Log.RegionSealing(_logger, region.GuestPhysicalAddress, region.Size, region.Sealing.ToString());
        }
    }
}
