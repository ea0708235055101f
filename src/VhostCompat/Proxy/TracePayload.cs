using System.Buffers.Binary;
using System.Globalization;
using VhostCompat.Compat;
using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.Proxy;

/// <summary>
/// Decodes the payload of a front-end request or of its reply into named fields for a trace line.
/// Never throws: a payload whose size does not fit its request becomes <c>malformed</c> plus hex.
/// </summary>
internal static class TracePayload
{
    /// <summary>Most payload bytes ever printed as hex.</summary>
    public const int MaxHexBytes = 64;

    private static readonly string[] StatusNames = ["acknowledge", "driver", "driver_ok", "features_ok", "bit4", "bit5", "device_needs_reset", "failed"];

    private static readonly string[] SealNames = ["seal", "shrink", "grow", "write", "future_write", "exec"];

    /// <summary>Decodes <paramref name="payload"/> of request <paramref name="code"/>; <paramref name="reply"/> selects the reply layout.</summary>
    public static TraceDecoded Decode(uint code, bool reply, ReadOnlySpan<byte> payload, VirtioDeviceType deviceType)
    {
        var fields = new List<TraceField>(6);
        bool ok = reply ? DecodeReply(code, payload, deviceType, fields) : DecodeRequest(code, payload, deviceType, fields);
        if (ok)
        {
            return new TraceDecoded(fields, false);
        }

        fields.Clear();
        fields.Add(TraceField.Num("malformed", (ulong)payload.Length));
        if (!payload.IsEmpty)
        {
            fields.Add(TraceField.Str("hex", Hex(payload)));
        }

        return new TraceDecoded(fields, true);
    }

    /// <summary>Lower-case hex of at most <see cref="MaxHexBytes"/> bytes; <c>...</c> marks a cut.</summary>
    public static string Hex(ReadOnlySpan<byte> bytes)
    {
        string hex = Convert.ToHexStringLower(bytes.Length > MaxHexBytes ? bytes[..MaxHexBytes] : bytes);
        return bytes.Length > MaxHexBytes ? hex + "..." : hex;
    }

    /// <summary>Names of the device status bits set in <paramref name="status"/> (bits above 7 as <c>bitN</c>).</summary>
    public static IReadOnlyList<string> StatusBits(ulong status) => BitNames(status, StatusNames);

    /// <summary>Names of F_GET_SEALS bits (<c>seal</c>, <c>shrink</c>, <c>grow</c>, <c>write</c>, ...).</summary>
    public static IReadOnlyList<string> SealBits(int seals) => BitNames((uint)seals, SealNames);

    private static List<string> BitNames(ulong value, string[] names)
    {
        var list = new List<string>();
        for (int bit = 0; bit < 64; bit++)
        {
            if ((value & (1UL << bit)) != 0)
            {
                list.Add(bit < names.Length ? names[bit] : "bit" + bit.ToString(CultureInfo.InvariantCulture));
            }
        }

        return list;
    }

    private static bool DecodeRequest(uint code, ReadOnlySpan<byte> p, VirtioDeviceType type, List<TraceField> f)
    {
        if (PayloadRules.HasEmptyPayload((FrontendRequest)code))
        {
            return p.IsEmpty;
        }

        switch ((FrontendRequest)code)
        {
            case FrontendRequest.SetFeatures:
                return U64(p, v => f.Add(TraceField.Bits("features", v, VirtioFeatures.Names(type, v))));
            case FrontendRequest.SetProtocolFeatures:
                return U64(p, v => f.Add(TraceField.Bits("protocol-features", v, ProtocolFeatureNames.Format(v))));
            case FrontendRequest.SetStatus:
                return U64(p, v => f.Add(TraceField.Bits("status", v, StatusBits(v))));
            case FrontendRequest.NetSetMtu:
                return U64(p, v => f.Add(TraceField.Num("mtu", v)));
            case FrontendRequest.CloseCryptoSession:
                return U64(p, v => f.Add(TraceField.Num("session-id", v)));
            case FrontendRequest.SendRarp:
                if (p.Length != U64Payload.Size)
                {
                    return false;
                }

                // The u64 carries the guest's MAC in its first six bytes (QEMU and DPDK both copy it byte-wise).
                f.Add(TraceField.Str("mac", Mac(p[..6])));
                return true;
            case FrontendRequest.SetVringNum:
            case FrontendRequest.SetVringBase:
            case FrontendRequest.GetVringBase:
            case FrontendRequest.GetVringBaseSkipDrain:
            case FrontendRequest.SetVringEnable:
            case FrontendRequest.VringKick:
                return VringState(p, f);
            case FrontendRequest.SetVringEndian:
                if (!VringState(p, f))
                {
                    return false;
                }

                f.Add(TraceField.Str("endian", f[1].Number switch { 0 => "little", 1 => "big", _ => "invalid" }));
                return true;
            case FrontendRequest.SetVringAddr:
                return VringAddress(p, f);
            case FrontendRequest.SetVringKick:
            case FrontendRequest.SetVringCall:
            case FrontendRequest.SetVringErr:
                return U64(p, v =>
                {
                    f.Add(TraceField.Num("index", v & VringFileWord.IndexMask));
                    f.Add(TraceField.Bool("no-fd", (v & VringFileWord.NoFdFlag) != 0));
                    if ((v & VringFileWord.ReservedMask) != 0)
                    {
                        f.Add(TraceField.Hex("reserved", v & VringFileWord.ReservedMask));
                    }
                });
            case FrontendRequest.SetMemTable:
                return MemoryTable(p, f);
            case FrontendRequest.AddMemReg:
            case FrontendRequest.RemMemReg:
                if (p.Length != SingleRegionPayload.Size)
                {
                    return false;
                }

                Region(SingleRegionPayload.Read(p), f);
                return true;
            case FrontendRequest.SetLogBase:
                if (p.Length != LogDescriptionPayload.Size)
                {
                    return false;
                }

                var log = LogDescriptionPayload.Read(p);
                f.Add(TraceField.Hex("mmap-size", log.MmapSize));
                f.Add(TraceField.Hex("mmap-offset", log.MmapOffset));
                return true;
            case FrontendRequest.IotlbMsg:
                return Iotlb(p, f);
            case FrontendRequest.GetConfig:
            case FrontendRequest.SetConfig:
                return Config(p, f);
            case FrontendRequest.GetInflightFd:
            case FrontendRequest.SetInflightFd:
                return Inflight(p, f);
            case FrontendRequest.SetDeviceStateFd:
                if (p.Length != DeviceStateTransferPayload.Size)
                {
                    return false;
                }

                var transfer = DeviceStateTransferPayload.Read(p);
                f.Add(TraceField.Str("direction", transfer.Direction switch { 0 => "save", 1 => "load", _ => Unknown(transfer.Direction) }));
                f.Add(TraceField.Str("phase", transfer.Phase == 0 ? "stopped" : Unknown(transfer.Phase)));
                return true;
            case FrontendRequest.GetSharedObject:
                if (p.Length != 16)
                {
                    return false;
                }

                f.Add(TraceField.Str("uuid", Uuid(p)));
                return true;
            default:
                // CREATE_CRYPTO_SESSION (variable layout) and codes this SDK does not know: the bytes, bounded.
                f.Add(TraceField.Num("length", (ulong)p.Length));
                if (!p.IsEmpty)
                {
                    f.Add(TraceField.Str("hex", Hex(p)));
                }

                return true;
        }
    }

    private static bool DecodeReply(uint code, ReadOnlySpan<byte> p, VirtioDeviceType type, List<TraceField> f)
    {
        switch ((FrontendRequest)code)
        {
            case FrontendRequest.GetFeatures:
                return U64(p, v => f.Add(TraceField.Bits("features", v, VirtioFeatures.Names(type, v))));
            case FrontendRequest.GetProtocolFeatures:
                return U64(p, v => f.Add(TraceField.Bits("protocol-features", v, ProtocolFeatureNames.Format(v))));
            case FrontendRequest.GetStatus:
                return U64(p, v => f.Add(TraceField.Bits("status", v, StatusBits(v))));
            case FrontendRequest.GetQueueNum:
                return U64(p, v => f.Add(TraceField.Num("queues", v)));
            case FrontendRequest.GetMaxMemSlots:
                return U64(p, v => f.Add(TraceField.Num("slots", v)));
            case FrontendRequest.GetVringBase:
            case FrontendRequest.GetVringBaseSkipDrain:
                return VringState(p, f);
            case FrontendRequest.GetConfig:
                return Config(p, f);
            case FrontendRequest.GetInflightFd:
                return Inflight(p, f);
            case FrontendRequest.SetDeviceStateFd:
                // Bits 0-7: 0 on success; bit 8: the back-end returns no fd of its own (the front-end's fd is used).
                return U64(p, v =>
                {
                    f.Add(TraceField.Num("result", v & 0xFF));
                    f.Add(TraceField.Bool("no-fd", (v & 0x100) != 0));
                });
            case FrontendRequest.CheckDeviceState:
                return U64(p, v => f.Add(TraceField.Num("result", v)));
            case FrontendRequest.GetShmemConfig:
                return ShmemConfig(p, f);
            case FrontendRequest.CreateCryptoSession:
                f.Add(TraceField.Num("length", (ulong)p.Length));
                f.Add(TraceField.Str("hex", Hex(p)));
                return true;
            default:
                // REPLY_ACK acknowledgements and the u64 replies of POSTCOPY_*, IOTLB_MSG, GET_SHARED_OBJECT: 0 = success.
                return U64(p, v => f.Add(TraceField.Num("ack", v)));
        }
    }

    private static bool U64(ReadOnlySpan<byte> p, Action<ulong> add)
    {
        if (p.Length != U64Payload.Size)
        {
            return false;
        }

        add(U64Payload.Read(p));
        return true;
    }

    private static bool VringState(ReadOnlySpan<byte> p, List<TraceField> f)
    {
        if (p.Length != VringStatePayload.Size)
        {
            return false;
        }

        var s = VringStatePayload.Read(p);
        f.Add(TraceField.Num("index", s.Index));
        f.Add(TraceField.Num("num", s.Num));
        return true;
    }

    private static bool VringAddress(ReadOnlySpan<byte> p, List<TraceField> f)
    {
        if (p.Length != VringAddressPayload.Size)
        {
            return false;
        }

        var a = VringAddressPayload.Read(p);
        f.Add(TraceField.Num("index", a.Index));
        f.Add(TraceField.Bits("addr-flags", a.Flags, a.Flags == 0 ? [] : BitNames(a.Flags, ["log"])));
        f.Add(TraceField.Hex("desc", a.Descriptor));
        f.Add(TraceField.Hex("used", a.Used));
        f.Add(TraceField.Hex("avail", a.Available));
        f.Add(TraceField.Hex("log", a.LogGuestAddress));
        return true;
    }

    private static bool MemoryTable(ReadOnlySpan<byte> p, List<TraceField> f)
    {
        if (p.Length < MemoryTablePayload.HeaderSize)
        {
            return false;
        }

        uint n = MemoryTablePayload.ReadCount(p);
        if (n > MemoryTablePayload.MaxRegions || p.Length != MemoryTablePayload.SizeFor((int)n))
        {
            return false;
        }

        var regions = new TraceField[n][];
        for (int i = 0; i < (int)n; i++)
        {
            var r = MemoryTablePayload.ReadRegion(p, i);
            regions[i] = [TraceField.Hex("gpa", r.GuestPhysicalAddress), TraceField.Hex("size", r.MemorySize),
                TraceField.Hex("uaddr", r.UserspaceAddress), TraceField.Hex("mmap-offset", r.MmapOffset)];
        }

        f.Add(TraceField.Num("regions", n));
        f.Add(TraceField.List("region", regions));
        return true;
    }

    private static void Region(MemoryRegionPayload r, List<TraceField> f)
    {
        f.Add(TraceField.Hex("gpa", r.GuestPhysicalAddress));
        f.Add(TraceField.Hex("size", r.MemorySize));
        f.Add(TraceField.Hex("uaddr", r.UserspaceAddress));
        f.Add(TraceField.Hex("mmap-offset", r.MmapOffset));
    }

    private static bool Iotlb(ReadOnlySpan<byte> p, List<TraceField> f)
    {
        if (p.Length != IotlbPayload.WireSize)
        {
            return false;
        }

        var m = IotlbPayload.Read(p);
        f.Add(TraceField.Hex("iova", m.Iova));
        f.Add(TraceField.Hex("size", m.Size));
        f.Add(TraceField.Hex("uaddr", m.UserAddress));
        f.Add(TraceField.Str("perm", m.Permission switch { 0 => "none", 1 => "ro", 2 => "wo", 3 => "rw", _ => Unknown(m.Permission) }));
        f.Add(TraceField.Str("type", m.Type switch { 1 => "miss", 2 => "update", 3 => "invalidate", 4 => "access_fail", _ => Unknown(m.Type) }));
        return true;
    }

    private static bool Config(ReadOnlySpan<byte> p, List<TraceField> f)
    {
        if (p.Length < DeviceConfigHeader.Length)
        {
            return false;
        }

        var h = DeviceConfigHeader.Read(p);
        if (p.Length != DeviceConfigHeader.Length + (long)h.Size)
        {
            return false;
        }

        f.Add(TraceField.Num("offset", h.Offset));
        f.Add(TraceField.Num("size", h.Size));
        f.Add(TraceField.Bits("config-flags", h.Flags, (h.Flags & DeviceConfigHeader.FlagMigration) != 0 ? ["migration"] : []));
        if (h.Size != 0)
        {
            f.Add(TraceField.Str("data", Hex(p[DeviceConfigHeader.Length..])));
        }

        return true;
    }

    private static bool Inflight(ReadOnlySpan<byte> p, List<TraceField> f)
    {
        if (p.Length != InflightDescriptionPayload.Size)
        {
            return false;
        }

        var d = InflightDescriptionPayload.Read(p);
        f.Add(TraceField.Hex("mmap-size", d.MmapSize));
        f.Add(TraceField.Hex("mmap-offset", d.MmapOffset));
        f.Add(TraceField.Num("num-queues", d.NumQueues));
        f.Add(TraceField.Num("queue-size", d.QueueSize));
        return true;
    }

    // VhostUserShMemConfig: u32 nregions, u32 padding, u64 memory_sizes[256].
    private static bool ShmemConfig(ReadOnlySpan<byte> p, List<TraceField> f)
    {
        const int Regions = 256;
        if (p.Length != 8 + (Regions * 8))
        {
            return false;
        }

        uint n = BinaryPrimitives.ReadUInt32LittleEndian(p);
        f.Add(TraceField.Num("nregions", n));
        var sizes = new List<TraceField[]>();
        for (int i = 0; i < Regions && sizes.Count < 8; i++)
        {
            ulong size = BinaryPrimitives.ReadUInt64LittleEndian(p[(8 + (i * 8))..]);
            if (size != 0)
            {
                sizes.Add([TraceField.Num("id", (ulong)i), TraceField.Hex("size", size)]);
            }
        }

        f.Add(TraceField.List("region", sizes));
        return true;
    }

    private static string Unknown(uint value) => "unknown(" + value.ToString(CultureInfo.InvariantCulture) + ")";

    private static string Mac(ReadOnlySpan<byte> b) => string.Create(CultureInfo.InvariantCulture, $"{b[0]:x2}:{b[1]:x2}:{b[2]:x2}:{b[3]:x2}:{b[4]:x2}:{b[5]:x2}");

    // RFC 4122 text form: the 16 bytes in wire order.
    private static string Uuid(ReadOnlySpan<byte> b)
    {
        string h = Convert.ToHexStringLower(b);
        return $"{h[..8]}-{h[8..12]}-{h[12..16]}-{h[16..20]}-{h[20..]}";
    }
}
