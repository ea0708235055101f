using System.Runtime.CompilerServices;
using VhostCompat.Queues;

namespace VhostCompat.Benchmarks;

/// <summary>Shapes of the descriptor chains the benchmark driver makes available.</summary>
public enum ChainShape
{
    /// <summary>One 76-byte device-readable descriptor (virtio-net header + 64-byte frame in one buffer: DPDK virtio-user TX with VERSION_1/ANY_LAYOUT).</summary>
    OneDesc,

    /// <summary>12-byte readable header descriptor, then a 64-byte readable frame descriptor (header in its own buffer).</summary>
    TwoDesc,

    /// <summary>16-byte readable request header, then a 512-byte device-writable buffer (block request / RX shape).</summary>
    TwoDescRW,

    /// <summary>One INDIRECT descriptor pointing at a 2-entry table (header + frame).</summary>
    Indirect2,
}

/// <summary>
/// A split virtqueue laid out in a memfd (descriptor table, avail ring, used ring, indirect tables and
/// buffers all inside one 4 MiB region) plus a minimal "driver" that fills it the way virtio-user does.
/// The device side is the SDK's real <see cref="SplitVirtqueue"/>.
/// </summary>
internal sealed unsafe class SplitRing : IDisposable
{
    private const ulong DescOffset = 0x0000;
    private const ulong AvailOffset = 0x1_0000;
    private const ulong UsedOffset = 0x2_0000;
    private const ulong IndirectOffset = 0x4_0000;
    private const ulong BufferOffset = 0x10_0000;
    private const ulong BufferStride = 2048;

    private readonly GuestRam _ram;
    private readonly byte* _desc;
    private readonly byte* _avail;
    private readonly int _size;
    private readonly int _slotsPerChain;
    private ushort _availIndex;

    public SplitRing(int size, ChainShape shape)
    {
        _size = size;
        Shape = shape;
        _ram = new GuestRam(1, 4 * 1024 * 1024);
        _desc = _ram.Host(_ram.Gpa(0, DescOffset));
        _avail = _ram.Host(_ram.Gpa(0, AvailOffset));
        _slotsPerChain = shape is ChainShape.TwoDesc or ChainShape.TwoDescRW ? 2 : 1;
        for (int head = 0; head < size; head += _slotsPerChain)
        {
            ulong buf = _ram.Gpa(0, BufferOffset + ((ulong)head * BufferStride));
            switch (shape)
            {
                case ChainShape.OneDesc:
                    WriteDesc(_desc, head, buf, 76, 0, 0);
                    break;
                case ChainShape.TwoDesc:
                    WriteDesc(_desc, head, buf, 12, VirtqueueLayout.DescFlagNext, (ushort)(head + 1));
                    WriteDesc(_desc, head + 1, buf + 64, 64, 0, 0);
                    break;
                case ChainShape.TwoDescRW:
                    WriteDesc(_desc, head, buf, 16, VirtqueueLayout.DescFlagNext, (ushort)(head + 1));
                    WriteDesc(_desc, head + 1, buf + 64, 512, VirtqueueLayout.DescFlagWrite, 0);
                    break;
                case ChainShape.Indirect2:
                    ulong table = _ram.Gpa(0, IndirectOffset + ((ulong)head * 32));
                    byte* t = _ram.Host(table);
                    WriteDesc(t, 0, buf, 12, VirtqueueLayout.DescFlagNext, 1);
                    WriteDesc(t, 1, buf + 64, 64, 0, 0);
                    WriteDesc(_desc, head, table, 32, VirtqueueLayout.DescFlagIndirect, 0);
                    break;
            }

            // Recognisable frame bytes.
            new Span<byte>(_ram.Host(buf), (int)BufferStride).Fill((byte)head);
        }

        Queue = new SplitVirtqueue(1, size, _ram.Table, _ram.Uva(0, DescOffset), _ram.Uva(0, AvailOffset), _ram.Uva(0, UsedOffset), 0, indirect: true, eventIndex: false);
        Queue.SetEnabled(true);
    }

    public ChainShape Shape { get; }

    public GuestRam Ram => _ram;

    public int Size => _size;

    public byte* Desc => _desc;

    public byte* Avail => _avail;

    public byte* Used => _ram.Host(_ram.Gpa(0, UsedOffset));

    public SplitVirtqueue Queue { get; }

    /// <summary>Driver side: makes <paramref name="count"/> more chains available (in order, like IN_ORDER drivers).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Publish(int count)
    {
        ushort idx = _availIndex;
        for (int i = 0; i < count; i++)
        {
            ushort head = (ushort)(idx * _slotsPerChain % _size);
            Unsafe.WriteUnaligned(_avail + 4 + (2 * (idx % _size)), head);
            idx++;
        }

        _availIndex = idx;
        Volatile.Write(ref *(ushort*)(_avail + 2), idx); // release: entries before the index
    }

    private static void WriteDesc(byte* table, int index, ulong addr, uint len, ushort flags, ushort next)
    {
        byte* d = table + (index * VirtqueueLayout.DescriptorSize);
        Unsafe.WriteUnaligned(d, addr);
        Unsafe.WriteUnaligned(d + 8, len);
        Unsafe.WriteUnaligned(d + 12, flags);
        Unsafe.WriteUnaligned(d + 14, next);
    }

    public void Dispose() => _ram.Dispose();
}
