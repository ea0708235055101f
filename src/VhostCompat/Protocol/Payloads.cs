using System.Buffers.Binary;

namespace VhostCompat.Protocol;

// Payload layouts from the vhost-user specification. All integers are little-endian and the
// structures are packed unless a note says otherwise. Each type knows its exact wire size.

/// <summary>A single u64 payload (features, status, queue count, kick/call/err index word).</summary>
internal static class U64Payload
{
    public const int Size = 8;

    public static ulong Read(ReadOnlySpan<byte> p) => BinaryPrimitives.ReadUInt64LittleEndian(p);

    public static byte[] Encode(ulong value)
    {
        var b = new byte[Size];
        BinaryPrimitives.WriteUInt64LittleEndian(b, value);
        return b;
    }
}

/// <summary>VirtqueueSetup state: ring index and a number (size, base, enable flag).</summary>
internal readonly record struct VringStatePayload(uint Index, uint Num)
{
    public const int Size = 8;

    public static VringStatePayload Read(ReadOnlySpan<byte> p) =>
        new(BinaryPrimitives.ReadUInt32LittleEndian(p), BinaryPrimitives.ReadUInt32LittleEndian(p[4..]));

    public byte[] Encode()
    {
        var b = new byte[Size];
        BinaryPrimitives.WriteUInt32LittleEndian(b, Index);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), Num);
        return b;
    }
}

/// <summary>VirtqueueSetup addresses. Field order on the wire is desc, used, avail (Linux struct vhost_vring_addr).</summary>
internal readonly record struct VringAddressPayload(uint Index, uint Flags, ulong Descriptor, ulong Used, ulong Available, ulong LogGuestAddress)
{
    public const int Size = 40;
    public const uint FlagLog = 0x1;

    public static VringAddressPayload Read(ReadOnlySpan<byte> p) => new(
        BinaryPrimitives.ReadUInt32LittleEndian(p),
        BinaryPrimitives.ReadUInt32LittleEndian(p[4..]),
        BinaryPrimitives.ReadUInt64LittleEndian(p[8..]),
        BinaryPrimitives.ReadUInt64LittleEndian(p[16..]),
        BinaryPrimitives.ReadUInt64LittleEndian(p[24..]),
        BinaryPrimitives.ReadUInt64LittleEndian(p[32..]));

    public byte[] Encode()
    {
        var b = new byte[Size];
        BinaryPrimitives.WriteUInt32LittleEndian(b, Index);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), Flags);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8), Descriptor);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(16), Used);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(24), Available);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(32), LogGuestAddress);
        return b;
    }
}

/// <summary>One memory region description (32 bytes).</summary>
internal readonly record struct MemoryRegionPayload(ulong GuestPhysicalAddress, ulong MemorySize, ulong UserspaceAddress, ulong MmapOffset)
{
    public const int Size = 32;

    public static MemoryRegionPayload Read(ReadOnlySpan<byte> p) => new(
        BinaryPrimitives.ReadUInt64LittleEndian(p),
        BinaryPrimitives.ReadUInt64LittleEndian(p[8..]),
        BinaryPrimitives.ReadUInt64LittleEndian(p[16..]),
        BinaryPrimitives.ReadUInt64LittleEndian(p[24..]));

    public void Write(Span<byte> b)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(b, GuestPhysicalAddress);
        BinaryPrimitives.WriteUInt64LittleEndian(b[8..], MemorySize);
        BinaryPrimitives.WriteUInt64LittleEndian(b[16..], UserspaceAddress);
        BinaryPrimitives.WriteUInt64LittleEndian(b[24..], MmapOffset);
    }
}

/// <summary>SET_MEM_TABLE: u32 region count, u32 padding, then that many regions.</summary>
internal static class MemoryTablePayload
{
    public const int HeaderSize = 8;

    /// <summary>VHOST_MEMORY_BASELINE_NREGIONS: the most regions SET_MEM_TABLE may carry.</summary>
    public const int MaxRegions = 8;

    public static uint ReadCount(ReadOnlySpan<byte> p) => BinaryPrimitives.ReadUInt32LittleEndian(p);

    public static int SizeFor(int regions) => HeaderSize + (regions * MemoryRegionPayload.Size);

    public static MemoryRegionPayload ReadRegion(ReadOnlySpan<byte> p, int i) =>
        MemoryRegionPayload.Read(p.Slice(HeaderSize + (i * MemoryRegionPayload.Size), MemoryRegionPayload.Size));

    public static byte[] Encode(IReadOnlyList<MemoryRegionPayload> regions)
    {
        var b = new byte[SizeFor(regions.Count)];
        BinaryPrimitives.WriteUInt32LittleEndian(b, (uint)regions.Count);
        for (int i = 0; i < regions.Count; i++)
        {
            regions[i].Write(b.AsSpan(HeaderSize + (i * MemoryRegionPayload.Size)));
        }

        return b;
    }
}

/// <summary>ADD_MEM_REG / REM_MEM_REG: u64 padding then one region (40 bytes).</summary>
internal static class SingleRegionPayload
{
    public const int Size = 8 + MemoryRegionPayload.Size;

    public static MemoryRegionPayload Read(ReadOnlySpan<byte> p) => MemoryRegionPayload.Read(p[8..]);

    public static byte[] Encode(MemoryRegionPayload region)
    {
        var b = new byte[Size];
        region.Write(b.AsSpan(8));
        return b;
    }
}

/// <summary>SET_LOG_BASE: u64 mmap size, u64 mmap offset (the spec table's "u64" is wrong).</summary>
internal readonly record struct LogDescriptionPayload(ulong MmapSize, ulong MmapOffset)
{
    public const int Size = 16;

    public static LogDescriptionPayload Read(ReadOnlySpan<byte> p) =>
        new(BinaryPrimitives.ReadUInt64LittleEndian(p), BinaryPrimitives.ReadUInt64LittleEndian(p[8..]));

    public byte[] Encode()
    {
        var b = new byte[Size];
        BinaryPrimitives.WriteUInt64LittleEndian(b, MmapSize);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8), MmapOffset);
        return b;
    }
}

/// <summary>GET/SET_CONFIG: u32 offset, u32 size, u32 flags, then size bytes of config space.</summary>
internal readonly record struct DeviceConfigHeader(uint Offset, uint Size, uint Flags)
{
    public const int Length = 12;

    /// <summary>Largest config space this SDK serves (virtio-blk's is 72+ bytes, net's 24).</summary>
    public const int MaxConfigSize = Virtio.VirtioConfigFields.MaxConfigSize;

    /// <summary>flags = 1: the write is part of a live migration (QEMU VHOST_SET_CONFIG_TYPE_MIGRATION).</summary>
    public const uint FlagMigration = 1;

    public static DeviceConfigHeader Read(ReadOnlySpan<byte> p) => new(
        BinaryPrimitives.ReadUInt32LittleEndian(p),
        BinaryPrimitives.ReadUInt32LittleEndian(p[4..]),
        BinaryPrimitives.ReadUInt32LittleEndian(p[8..]));

    public byte[] Encode(ReadOnlySpan<byte> data)
    {
        var b = new byte[Length + data.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(b, Offset);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), Size);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(8), Flags);
        data.CopyTo(b.AsSpan(Length));
        return b;
    }
}

/// <summary>GET/SET_INFLIGHT_FD description: u64 mmap size, u64 offset, u16 queues, u16 queue size, 4 bytes tail padding (24).</summary>
internal readonly record struct InflightDescriptionPayload(ulong MmapSize, ulong MmapOffset, ushort NumQueues, ushort QueueSize)
{
    public const int Size = 24;

    public static InflightDescriptionPayload Read(ReadOnlySpan<byte> p) => new(
        BinaryPrimitives.ReadUInt64LittleEndian(p),
        BinaryPrimitives.ReadUInt64LittleEndian(p[8..]),
        BinaryPrimitives.ReadUInt16LittleEndian(p[16..]),
        BinaryPrimitives.ReadUInt16LittleEndian(p[18..]));

    public byte[] Encode()
    {
        var b = new byte[Size];
        BinaryPrimitives.WriteUInt64LittleEndian(b, MmapSize);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8), MmapOffset);
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(16), NumQueues);
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(18), QueueSize);
        return b;
    }
}

/// <summary>IOTLB message: u64 iova, u64 size, u64 uaddr, u8 perm, u8 type, 6 bytes padding (32).</summary>
internal readonly record struct IotlbPayload(ulong Iova, ulong Size, ulong UserAddress, byte Permission, byte Type)
{
    public const int WireSize = 32;

    public static IotlbPayload Read(ReadOnlySpan<byte> p) => new(
        BinaryPrimitives.ReadUInt64LittleEndian(p),
        BinaryPrimitives.ReadUInt64LittleEndian(p[8..]),
        BinaryPrimitives.ReadUInt64LittleEndian(p[16..]),
        p[24],
        p[25]);
}

/// <summary>VirtqueueSetup area (back-end channel HOST_NOTIFIER): u64 index|flags, u64 size, u64 offset (24).</summary>
internal readonly record struct VringAreaPayload(ulong IndexAndFlags, ulong Size, ulong Offset)
{
    public const int WireSize = 24;

    public byte[] Encode()
    {
        var b = new byte[WireSize];
        BinaryPrimitives.WriteUInt64LittleEndian(b, IndexAndFlags);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8), Size);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(16), Offset);
        return b;
    }
}

/// <summary>SET_DEVICE_STATE_FD parameters: u32 direction (0 save, 1 load), u32 phase (0 stopped).</summary>
internal readonly record struct DeviceStateTransferPayload(uint Direction, uint Phase)
{
    public const int Size = 8;

    public static DeviceStateTransferPayload Read(ReadOnlySpan<byte> p) =>
        new(BinaryPrimitives.ReadUInt32LittleEndian(p), BinaryPrimitives.ReadUInt32LittleEndian(p[4..]));
}

/// <summary>The u64 of SET_VRING_KICK/CALL/ERR: bits 0-7 ring index, bit 8 "no fd", bits 9-63 reserved.</summary>
internal static class VringFileWord
{
    public const ulong IndexMask = 0xFF;
    public const ulong NoFdFlag = 0x100;
    public const ulong ReservedMask = ~0x1FFUL;

    public static ulong Make(int index, bool noFd) => ((ulong)index & IndexMask) | (noFd ? NoFdFlag : 0);
}
