using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using VhostCompat.Queues;

namespace VhostCompat.InteropTests.Harness;

/// <summary>
/// An in-process virtio-blk test device over a memory disk whose capacity the test changes at runtime
/// (<see cref="Resize"/>) and then announces with <see cref="VhostUserDevice.BackendRequests"/>
/// (CONFIG_CHANGE_MSG). Serves read, write, flush and get-id on one queue; every request is range-checked
/// against the capacity at the time it is served. Opts into CONFIG (QEMU's vhost-user-blk reads its config
/// from the backend) and BACKEND_REQ (the channel the notification travels on).
/// </summary>
internal sealed class ResizableBlockDevice : VhostUserDevice
{
    public const int SectorSize = 512;

    /// <summary>Written at the start of the last sector of the grown disk, so the guest can prove it reads the new space.</summary>
    public const string GrownMarker = "VHOSTCOMPAT-GROWN";

    private const int HeaderLength = 16;
    private const byte StatusOk = 0, StatusIoErr = 1, StatusUnsupported = 2;
    private const uint TypeIn = 0, TypeOut = 1, TypeFlush = 4, TypeGetId = 8;
    private const uint MaxSegments = 126;
    private const ulong SegMax = 1UL << 2, BlkSize = 1UL << 6, Flush = 1UL << 9;

    private readonly byte[] _disk;
    private readonly string _serial;
    private ulong _capacitySectors;
    private long _configReads;
    private TaskCompletionSource<long>? _nextConfigRead;

    /// <param name="capacityBytes">Initial capacity (a multiple of 512).</param>
    /// <param name="maxCapacityBytes">Largest capacity <see cref="Resize"/> accepts; the memory disk has this size.</param>
    /// <param name="serial">GET_ID answer (at most 20 bytes).</param>
    public ResizableBlockDevice(long capacityBytes, long maxCapacityBytes, string serial)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(capacityBytes);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxCapacityBytes, capacityBytes);
        if (capacityBytes % SectorSize != 0 || maxCapacityBytes % SectorSize != 0)
        {
            throw new ArgumentException("capacities must be multiples of 512 bytes");
        }

        _disk = new byte[maxCapacityBytes];
        _serial = serial;
        _capacitySectors = (ulong)(capacityBytes / SectorSize);
    }

    /// <summary>Current capacity in 512-byte sectors (what GET_CONFIG reports at offset 0).</summary>
    public ulong CapacitySectors => Volatile.Read(ref _capacitySectors);

    /// <summary>GET_CONFIG requests served so far.</summary>
    public long ConfigReads => Interlocked.Read(ref _configReads);

    /// <summary>Requests (of any type) the guest completed on the ring.</summary>
    public long Requests;

    public override VirtioDeviceType DeviceType => VirtioDeviceType.Block;

    public override ulong DeviceFeatures => VirtioFeatureBits.Version1 | VirtioFeatureBits.IndirectDesc | SegMax | BlkSize | Flush;

    public override VhostUserProtocolFeatures ProtocolFeatures => VhostUserProtocolFeatures.Config | VhostUserProtocolFeatures.BackendReq;

    public override int QueueCount => 1;

    public override ushort MaxQueueSize => 256;

    /// <summary>struct virtio_blk_config up to and including write_zeroes_may_unmap (what QEMU 7.2 asks for).</summary>
    public override int ConfigSize => 60;

    /// <summary>
    /// Sets a new capacity (the grown range reads as zeroes, except <see cref="GrownMarker"/> at the start of the last
    /// sector). Does not notify the frontend: that is the caller's <c>BackendRequests.NotifyConfigChanged()</c>.
    /// </summary>
    public void Resize(long capacityBytes)
    {
        if (capacityBytes <= 0 || capacityBytes > _disk.Length || capacityBytes % SectorSize != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(capacityBytes), $"{capacityBytes} outside 512..{_disk.Length} in whole sectors");
        }

        Encoding.ASCII.GetBytes(GrownMarker).CopyTo(_disk.AsSpan((int)(capacityBytes - SectorSize)));
        Volatile.Write(ref _capacitySectors, (ulong)(capacityBytes / SectorSize));
    }

    /// <summary>
    /// Completes with the <see cref="Stopwatch"/> timestamp of the next GET_CONFIG after this call (the frontend
    /// re-reading the config space, e.g. after CONFIG_CHANGE_MSG).
    /// </summary>
    public Task<long> NextConfigReadAsync()
    {
        var tcs = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
        Volatile.Write(ref _nextConfigRead, tcs);
        return tcs.Task;
    }

    public override void ReadConfig(int offset, Span<byte> destination)
    {
        Span<byte> c = stackalloc byte[60];
        c.Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(c, CapacitySectors);   // capacity
        BinaryPrimitives.WriteUInt32LittleEndian(c[12..], MaxSegments); // seg_max
        BinaryPrimitives.WriteUInt32LittleEndian(c[20..], SectorSize);  // blk_size
        BinaryPrimitives.WriteUInt16LittleEndian(c[34..], 1);           // num_queues
        c.Slice(offset, destination.Length).CopyTo(destination);
        Interlocked.Increment(ref _configReads);
        Interlocked.Exchange(ref _nextConfigRead, null)?.TrySetResult(Stopwatch.GetTimestamp());
    }

    public override void OnQueueKicked(Virtqueue queue)
    {
        Span<byte> header = stackalloc byte[HeaderLength];
        while (queue.TryPop(out DescriptorChain? chain))
        {
            int written = Serve(chain, header);
            queue.Push(chain, written);
            Interlocked.Increment(ref Requests);
        }
    }

    /// <summary>Serves one request; returns the bytes written into the chain (data and status).</summary>
    private int Serve(DescriptorChain chain, Span<byte> header)
    {
        if (chain.WritableLength < 1)
        {
            return 0; // nowhere to put a status: the driver broke the protocol, complete it empty
        }

        int statusAt = chain.WritableLength - 1;
        if (chain.ReadableLength < HeaderLength || chain.ReadReadable(0, header) != HeaderLength)
        {
            return WriteStatus(chain, statusAt, StatusIoErr);
        }

        uint type = BinaryPrimitives.ReadUInt32LittleEndian(header);
        ulong sector = BinaryPrimitives.ReadUInt64LittleEndian(header[8..]);
        switch (type)
        {
            case TypeIn:
                return InRange(sector, statusAt)
                    ? Copy(chain, sector, statusAt, read: true)
                    : WriteStatus(chain, statusAt, StatusIoErr);
            case TypeOut:
                int length = chain.ReadableLength - HeaderLength;
                return InRange(sector, length)
                    ? Copy(chain, sector, length, read: false)
                    : WriteStatus(chain, statusAt, StatusIoErr);
            case TypeFlush:
                return WriteStatus(chain, statusAt, StatusOk); // memory: nothing to flush
            case TypeGetId:
                byte[] id = Encoding.ASCII.GetBytes(_serial);
                int n = Math.Min(Math.Min(id.Length, 20), statusAt);
                chain.WriteWritable(0, id.AsSpan(0, n));
                return WriteStatus(chain, statusAt, StatusOk);
            default:
                return WriteStatus(chain, statusAt, StatusUnsupported);
        }
    }

    private bool InRange(ulong sector, int length)
    {
        ulong capacity = CapacitySectors;
        return length % SectorSize == 0 && sector <= capacity && (ulong)(length / SectorSize) <= capacity - sector;
    }

    private int Copy(DescriptorChain chain, ulong sector, int length, bool read)
    {
        Span<byte> span = _disk.AsSpan(checked((int)(sector * SectorSize)), length);
        int done = read ? chain.WriteWritable(0, span) : chain.ReadReadable(HeaderLength, span);
        int statusAt = chain.WritableLength - 1;
        WriteStatus(chain, statusAt, done == length ? StatusOk : StatusIoErr);
        return read ? chain.WritableLength : 1;
    }

    private static int WriteStatus(DescriptorChain chain, int statusAt, byte status)
    {
        chain.WriteWritable(statusAt, [status]);
        return statusAt + 1;
    }
}
