using System.Buffers.Binary;
using VhostCompat.Frontend;

namespace VhostCompat.IntegrationTests.Support;

/// <summary>
/// The driver side of a split virtqueue, laid out by hand in <see cref="GuestMemory"/>: descriptor
/// table at <c>baseGpa</c>, avail ring after it, used ring on the next 4 KiB boundary, buffers after.
/// </summary>
internal sealed class SplitRingDriver
{
    private readonly GuestMemory _mem;
    private ushort _availIdx;
    private ushort _lastUsed;
    private ulong _nextBuffer;
    private int _nextDesc;

    public SplitRingDriver(GuestMemory mem, ulong baseGpa, int size)
    {
        _mem = mem;
        Size = size;
        Desc = baseGpa;
        Avail = baseGpa + (16 * (ulong)size);
        Used = (Avail + 6 + (2 * (ulong)size) + 4095) & ~4095ul;
        _nextBuffer = (Used + 6 + (8 * (ulong)size) + 4095) & ~4095ul;
    }

    public int Size { get; }

    public ulong Desc { get; }

    public ulong Avail { get; }

    public ulong Used { get; }

    public Task ConfigureAsync(VhostUserFrontend fe, int index, EventNotifier kick, EventNotifier? call, uint nextAvail = 0) =>
        ConfigureCoreAsync(fe, index, kick, call, nextAvail);

    private async Task ConfigureCoreAsync(VhostUserFrontend fe, int index, EventNotifier kick, EventNotifier? call, uint nextAvail)
    {
        await fe.SetVringNumAsync(index, Size);
        await fe.SetVringBaseAsync(index, nextAvail);
        await fe.SetVringAddrAsync(index, _mem.ToFrontendAddress(Desc), _mem.ToFrontendAddress(Used), _mem.ToFrontendAddress(Avail));
        await fe.SetVringCallAsync(index, call);
        await fe.SetVringKickAsync(index, kick);
    }

    public ulong Allocate(int length)
    {
        ulong at = _nextBuffer;
        _nextBuffer += ((ulong)length + 15) & ~15ul;
        return at;
    }

    public void WriteDescriptor(int i, ulong addr, uint len, ushort flags, ushort next)
    {
        var d = new byte[16];
        BinaryPrimitives.WriteUInt64LittleEndian(d, addr);
        BinaryPrimitives.WriteUInt32LittleEndian(d.AsSpan(8), len);
        BinaryPrimitives.WriteUInt16LittleEndian(d.AsSpan(12), flags);
        BinaryPrimitives.WriteUInt16LittleEndian(d.AsSpan(14), next);
        _mem.Write(Desc + (16 * (ulong)i), d);
    }

    /// <summary>Adds a chain of one readable buffer (holding <paramref name="data"/>) and one writable buffer; returns the head.</summary>
    public ushort AddRequest(ReadOnlySpan<byte> data, int writable)
    {
        ushort head = (ushort)(_nextDesc % Size);
        ushort second = (ushort)((_nextDesc + 1) % Size);
        _nextDesc += 2;
        ulong r = Allocate(data.Length);
        _mem.Write(r, data);
        ulong w = Allocate(writable);
        WriteDescriptor(head, r, (uint)data.Length, 1, second);
        WriteDescriptor(second, w, (uint)writable, 2, 0);
        Publish(head);
        LastWritable = w;
        return head;
    }

    public ulong LastWritable { get; private set; }

    /// <summary>Adds a chain of one device-writable buffer (an event queue's buffer); returns the head.</summary>
    public ushort AddWritable(int length)
    {
        ushort head = (ushort)(_nextDesc % Size);
        _nextDesc++;
        ulong w = Allocate(length);
        WriteDescriptor(head, w, (uint)length, 2, 0);
        Publish(head);
        LastWritable = w;
        return head;
    }

    /// <summary>Puts a head in the avail ring and bumps avail.idx.</summary>
    public void Publish(ushort head)
    {
        var b = new byte[2];
        BinaryPrimitives.WriteUInt16LittleEndian(b, head);
        _mem.Write(Avail + 4 + (2 * (ulong)(_availIdx % Size)), b);
        _availIdx++;
        SetAvailIndex(_availIdx);
    }

    public void SetAvailIndex(ushort value)
    {
        var b = new byte[2];
        BinaryPrimitives.WriteUInt16LittleEndian(b, value);
        _mem.Write(Avail + 2, b);
    }

    public ushort UsedIndex()
    {
        var b = new byte[2];
        _mem.Read(Used + 2, b);
        return BinaryPrimitives.ReadUInt16LittleEndian(b);
    }

    /// <summary>Waits until the used index moves past what was seen, returns the new (id, len) elements.</summary>
    public async Task<List<(uint Id, uint Len)>> WaitUsedAsync(int count, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(5));
        while ((ushort)(UsedIndex() - _lastUsed) < count)
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"used index {UsedIndex()}, expected {_lastUsed + count}");
            }

            await Task.Delay(5);
        }

        var result = new List<(uint, uint)>();
        var e = new byte[8];
        for (int i = 0; i < count; i++)
        {
            _mem.Read(Used + 4 + (8 * (ulong)(_lastUsed % Size)), e);
            result.Add((BinaryPrimitives.ReadUInt32LittleEndian(e), BinaryPrimitives.ReadUInt32LittleEndian(e.AsSpan(4))));
            _lastUsed++;
        }

        return result;
    }
}
