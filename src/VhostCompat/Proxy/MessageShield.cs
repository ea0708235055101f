using VhostCompat.Interop;
using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.Proxy;

/// <summary>
/// The validating shield: the SDK's message rules applied to every frontend request before the proxy forwards it
/// to a backend written in C. Syntax (<see cref="PayloadRules"/>), negotiation (features and protocol features
/// acked only from the offer; requests gated on their protocol feature), indices and ring sizes against the offer,
/// memory, log and inflight descriptions against <c>fstat</c> of their fds (sealed against shrinking first), and
/// the type of every fd (eventfd, socket, pipe, file). Tracks the little session state those rules need.
/// </summary>
internal sealed class MessageShield
{
    private const ulong MaxLogSize = 1UL << 30;
    private readonly Dictionary<uint, int> _ringSizes = [];
    private readonly List<MemoryRegionPayload> _regions = [];
    private readonly bool _requireSealed;

    public MessageShield(VirtioDeviceType deviceType, ulong offeredFeatures, ulong offeredProtocol, int queueCount, int maxRingSize, bool requireSealed)
    {
        DeviceType = deviceType;
        OfferedFeatures = offeredFeatures;
        OfferedProtocol = offeredProtocol;
        QueueCount = queueCount;
        MaxRingSize = maxRingSize;
        _requireSealed = requireSealed;
    }

    public VirtioDeviceType DeviceType { get; }

    /// <summary>GET_FEATURES as the frontend sees it.</summary>
    public ulong OfferedFeatures { get; }

    /// <summary>GET_PROTOCOL_FEATURES as the frontend sees it.</summary>
    public ulong OfferedProtocol { get; }

    public int QueueCount { get; }

    public int MaxRingSize { get; }

    /// <summary>GET_MAX_MEM_SLOTS as the backend answered it (8 until then: the SET_MEM_TABLE limit).</summary>
    public int MaxMemorySlots { get; set; } = MemoryTablePayload.MaxRegions;

    public ulong AckedFeatures { get; private set; }

    public bool FeaturesAcked { get; private set; }

    public ulong AckedProtocol { get; private set; }

    public IReadOnlyDictionary<uint, int> RingSizes => _ringSizes;

    /// <summary>True when the request is answered by a reply of its own (not only a REPLY_ACK).</summary>
    public bool HasOwnReply(FrontendRequest request) =>
        PayloadRules.HasOwnReply(request) || (request == FrontendRequest.SetLogBase && Acked(VhostUserProtocolFeatures.LogShmfd));

    private bool Acked(VhostUserProtocolFeatures feature) => (AckedProtocol & (ulong)feature) != 0;

    private bool Packed => (AckedFeatures & VirtioFeatureBits.RingPacked) != 0;

    /// <summary>Checks one request and applies it to the session state; returns null when it may be forwarded, else the reason.</summary>
    public string? Check(VhostUserMessage message)
    {
        MessageHeader h = message.Header;
        if (h.IsReply)
        {
            return "reply flag set on a request";
        }

        if ((h.Flags & MessageHeader.ReservedMask) != 0)
        {
            return $"reserved flag bits set (flags 0x{h.Flags:x})";
        }

        if (message.FdsTruncated)
        {
            return "file descriptors were truncated (MSG_CTRUNC)";
        }

        if (PayloadRules.Validate(h.Request, message.Payload, message.FdCount) is { } syntax)
        {
            return syntax;
        }

        var request = (FrontendRequest)h.Request;
        var needed = CarriedProtocolFeatures.RequiredFor(request);
        if (needed != VhostUserProtocolFeatures.None && !Acked(needed))
        {
            return $"protocol feature {needed} was not negotiated";
        }

        return Semantics(request, message);
    }

    private string? Semantics(FrontendRequest request, VhostUserMessage message)
    {
        ReadOnlySpan<byte> p = message.Payload;
        switch (request)
        {
            case FrontendRequest.SetFeatures:
                return SetFeatures(U64Payload.Read(p));
            case FrontendRequest.SetProtocolFeatures:
            {
                ulong v = U64Payload.Read(p);
                if ((v & ~OfferedProtocol) != 0)
                {
                    return $"acked protocol bits 0x{v & ~OfferedProtocol:x} were never offered (offer 0x{OfferedProtocol:x})";
                }

                AckedProtocol = v;
                return null;
            }

            case FrontendRequest.SetVringNum:
                return SetVringNum(VringStatePayload.Read(p));
            case FrontendRequest.SetVringAddr:
                return SetVringAddr(VringAddressPayload.Read(p));
            case FrontendRequest.SetVringBase:
                return SetVringBase(VringStatePayload.Read(p));
            case FrontendRequest.GetVringBase:
                return Ring(VringStatePayload.Read(p).Index);
            case FrontendRequest.SetVringEnable:
            {
                var s = VringStatePayload.Read(p);
                return Ring(s.Index) ?? RequestRules.EnableValue(s.Num);
            }

            case FrontendRequest.SetVringKick:
            case FrontendRequest.SetVringCall:
            case FrontendRequest.SetVringErr:
                return Ring((uint)(U64Payload.Read(p) & VringFileWord.IndexMask)) ?? (message.FdCount == 1 ? FdKind(message, 0, "eventfd", IsEventFd) : null);
            case FrontendRequest.SetLogFd:
                return FdKind(message, 0, "eventfd", IsEventFd);
            case FrontendRequest.SetBackendReqFd:
                return FdKind(message, 0, "socket", fd => Mode(fd) == Libc.S_IFSOCK);
            case FrontendRequest.SetMemTable:
                return SetMemTable(message);
            case FrontendRequest.AddMemReg:
                return AddMemReg(message);
            case FrontendRequest.RemMemReg:
            {
                var r = SingleRegionPayload.Read(p);
                int i = _regions.FindIndex(x => x.GuestPhysicalAddress == r.GuestPhysicalAddress && x.MemorySize == r.MemorySize);
                if (i >= 0)
                {
                    _regions.RemoveAt(i);
                }

                return null;
            }

            case FrontendRequest.SetLogBase:
            {
                var log = LogDescriptionPayload.Read(p);
                return log.MmapSize is 0 or > MaxLogSize ? $"log size {log.MmapSize} outside 1..{MaxLogSize}" : FileRange(message, 0, "log", log.MmapOffset, log.MmapSize);
            }

            case FrontendRequest.GetConfig:
            case FrontendRequest.SetConfig:
            {
                var c = DeviceConfigHeader.Read(p);
                return (ulong)c.Offset + c.Size > DeviceConfigHeader.MaxConfigSize ? $"config window {c.Offset}+{c.Size} beyond {DeviceConfigHeader.MaxConfigSize} bytes"
                    : RequestRules.ConfigFlags(c.Flags);
            }

            case FrontendRequest.SetStatus:
                return RequestRules.Status(U64Payload.Read(p));
            case FrontendRequest.NetSetMtu:
                return RequestRules.Mtu(U64Payload.Read(p));

            case FrontendRequest.GetInflightFd:
            case FrontendRequest.SetInflightFd:
            {
                var d = InflightDescriptionPayload.Read(p);
                if (d.NumQueues == 0 || d.NumQueues > QueueCount || d.QueueSize == 0 || d.QueueSize > MaxRingSize)
                {
                    return $"inflight description for {d.NumQueues} queues of {d.QueueSize} outside 1..{QueueCount} queues of 1..{MaxRingSize}";
                }

                return request == FrontendRequest.SetInflightFd ? FileRange(message, 0, "inflight", d.MmapOffset, d.MmapSize) : null;
            }

            case FrontendRequest.SetDeviceStateFd:
            {
                var t = DeviceStateTransferPayload.Read(p);
                return t.Direction > 1 ? $"device-state direction {t.Direction} is neither save (0) nor load (1)"
                    : t.Phase != 0 ? $"device-state phase {t.Phase} is not 'stopped' (0)"
                    : FdKind(message, 0, "pipe or socket", fd => Mode(fd) is Libc.S_IFIFO or Libc.S_IFSOCK);
            }

            case FrontendRequest.IotlbMsg:
                return (AckedFeatures & VirtioFeatureBits.AccessPlatform) == 0 ? "ACCESS_PLATFORM was not negotiated" : null;
            case FrontendRequest.GpuSetSocket:
                return "GPU_SET_SOCKET is only valid for vhost-user-gpu devices";
            default:
                return null;
        }
    }

    private string? SetFeatures(ulong features)
    {
        ulong notOffered = features & ~OfferedFeatures;
        if (notOffered != 0)
        {
            return $"acked bits {VirtioFeatures.Format(DeviceType, notOffered)} (0x{notOffered:x}) were never offered (offer 0x{OfferedFeatures:x})";
        }

        AckedFeatures = features;
        FeaturesAcked = true;
        return null;
    }

    private string? Ring(uint index) => RequestRules.RingIndex(index, QueueCount);

    private string? SetVringNum(VringStatePayload s)
    {
        if (Ring(s.Index) is { } bad)
        {
            return bad;
        }

        if (RequestRules.RingSize(s.Num, MaxRingSize, Packed, out _) is { } badSize)
        {
            return badSize;
        }

        _ringSizes[s.Index] = (int)s.Num;
        return null;
    }

    private string? SetVringBase(VringStatePayload s)
    {
        if (Ring(s.Index) is { } bad)
        {
            return bad;
        }

        if (!Packed)
        {
            return RequestRules.SplitRingBase(s.Num, packed: false);
        }

        // Packed: bits 0..14 avail index, bit 15 its wrap counter, bits 16..30 used index, bit 31 its wrap counter.
        int size = _ringSizes.GetValueOrDefault(s.Index, MaxRingSize);
        uint avail = s.Num & 0x7FFF, used = (s.Num >> 16) & 0x7FFF;
        return avail >= size || used >= size ? $"packed ring base 0x{s.Num:x} has an index beyond ring size {size}" : null;
    }

    private string? SetVringAddr(VringAddressPayload a)
    {
        if (Ring(a.Index) is { } bad)
        {
            return bad;
        }

        if (RequestRules.AddressFlags(a.Flags) is { } badFlags)
        {
            return badFlags;
        }

        if (_regions.Count == 0)
        {
            return null; // Addresses are checked against the table once there is one (QEMU sends the table first).
        }

        ulong n = (ulong)_ringSizes.GetValueOrDefault(a.Index, 1);
        ulong descBytes = 16 * n;
        ulong availBytes = Packed ? 4 : 6 + (2 * n);
        ulong usedBytes = Packed ? 4 : 6 + (8 * n);
        return Inside("descriptor table", a.Descriptor, descBytes, Packed ? 16UL : 16UL)
            ?? Inside(Packed ? "driver event area" : "available ring", a.Available, availBytes, Packed ? 4UL : 2UL)
            ?? Inside(Packed ? "device event area" : "used ring", a.Used, usedBytes, 4UL);
    }

    private string? Inside(string what, ulong userAddress, ulong length, ulong alignment)
    {
        if (userAddress % alignment != 0)
        {
            return $"{what} at 0x{userAddress:x} is not {alignment}-byte aligned";
        }

        foreach (var r in _regions)
        {
            if (userAddress >= r.UserspaceAddress && userAddress - r.UserspaceAddress <= r.MemorySize && length <= r.MemorySize - (userAddress - r.UserspaceAddress))
            {
                return null;
            }
        }

        return $"{what} at 0x{userAddress:x} (+{length}) lies outside every memory region";
    }

    private string? SetMemTable(VhostUserMessage message)
    {
        uint n = MemoryTablePayload.ReadCount(message.Payload);
        var table = new List<MemoryRegionPayload>((int)n);
        for (int i = 0; i < (int)n; i++)
        {
            var r = MemoryTablePayload.ReadRegion(message.Payload, i);
            if (Region(message, i, r, table) is { } bad)
            {
                return $"region {i}: {bad}";
            }

            table.Add(r);
        }

        _regions.Clear();
        _regions.AddRange(table);
        return null;
    }

    private string? AddMemReg(VhostUserMessage message)
    {
        var r = SingleRegionPayload.Read(message.Payload);
        if (_regions.Count >= MaxMemorySlots)
        {
            return $"{_regions.Count} regions already: the backend offers {MaxMemorySlots} slots";
        }

        if (Region(message, 0, r, _regions) is { } bad)
        {
            return bad;
        }

        _regions.Add(r);
        return null;
    }

    private string? Region(VhostUserMessage message, int fdIndex, MemoryRegionPayload r, List<MemoryRegionPayload> others)
    {
        if (r.MemorySize == 0)
        {
            return "size 0";
        }

        if (r.GuestPhysicalAddress > ulong.MaxValue - r.MemorySize || r.UserspaceAddress > ulong.MaxValue - r.MemorySize)
        {
            return $"guest address 0x{r.GuestPhysicalAddress:x} or frontend address 0x{r.UserspaceAddress:x} + size 0x{r.MemorySize:x} overflows";
        }

        foreach (var o in others)
        {
            if (r.GuestPhysicalAddress < o.GuestPhysicalAddress + o.MemorySize && o.GuestPhysicalAddress < r.GuestPhysicalAddress + r.MemorySize)
            {
                return $"guest range 0x{r.GuestPhysicalAddress:x}+0x{r.MemorySize:x} overlaps region 0x{o.GuestPhysicalAddress:x}+0x{o.MemorySize:x}";
            }

            // Frontend addresses too: rings are given as frontend addresses, so overlapping ones would make translation ambiguous (B6).
            if (r.UserspaceAddress < o.UserspaceAddress + o.MemorySize && o.UserspaceAddress < r.UserspaceAddress + r.MemorySize)
            {
                return $"frontend range 0x{r.UserspaceAddress:x}+0x{r.MemorySize:x} overlaps region 0x{o.UserspaceAddress:x}+0x{o.MemorySize:x}";
            }
        }

        return FileRange(message, fdIndex, "memory", r.MmapOffset, r.MemorySize);
    }

    // The fd must be a file whose size covers [offset, offset + length): sealed against shrinking first, so the check stays true.
    private string? FileRange(VhostUserMessage message, int index, string what, ulong offset, ulong length)
    {
        var fd = message.PeekFd(index)!;
        if (!Libc.TryGetFileInfo(fd.Value, out long size, out uint mode, out int errno))
        {
            return $"{what} fd: {Libc.ErrorText("fstat", errno).TrimEnd()}";
        }

        if ((mode & Libc.S_IFMT) != Libc.S_IFREG)
        {
            return $"{what} fd is not a regular file or memfd (mode 0x{mode:x})";
        }

        if (!FrontendFileSeals.TrySecure(fd, what, _requireSealed, out _, out string sealError))
        {
            return sealError;
        }

        if (!Libc.TryGetFileInfo(fd.Value, out size, out _, out errno))
        {
            return $"{what} fd: {Libc.ErrorText("fstat", errno).TrimEnd()}";
        }

        return offset > ulong.MaxValue - length || offset + length > (ulong)size
            ? $"{what} mapping 0x{offset:x}+0x{length:x} exceeds the file's {size} bytes"
            : null;
    }

    private static string? FdKind(VhostUserMessage message, int index, string expected, Func<int, bool> test) =>
        test(message.PeekFd(index)!.Value) ? null : $"fd is not a {expected} ({Libc.FdTarget(message.PeekFd(index)!.Value) ?? "unknown"})";

    private static bool IsEventFd(int fd) => Libc.FdTarget(fd) == "anon_inode:[eventfd]";

    private static uint Mode(int fd) => Libc.TryGetFileInfo(fd, out _, out uint mode, out _) ? mode & Libc.S_IFMT : 0;
}
