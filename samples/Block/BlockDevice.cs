using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Text;
using Microsoft.Win32.SafeHandles;
using VhostCompat.Backend;
using VhostCompat.Queues;
using VhostCompat.Virtio;

namespace VhostCompat.Samples.Block;

/// <summary>
/// virtio-blk over a file: read, write, flush, get-id, discard and write-zeroes, read-only mode,
/// capacity and block size in config space, several queues. Requests are guest-controlled: a bad
/// header, a range beyond the capacity, a missing status byte or a write to a read-only disk gets
/// the virtio-blk status it deserves and nothing is touched outside the file's range.
/// Reads and writes run asynchronously, up to <c>--queue-depth</c> per queue, and complete in whatever
/// order the host finishes them: guest memory is only touched on the queue's worker (data is copied
/// into a pooled buffer before a write and out of it after a read), the file I/O runs on the thread
/// pool, and <see cref="Virtqueue.Wake"/> brings each completion back. Other requests, and every
/// request with <c>--queue-depth 1</c>, run synchronously on the worker.
/// </summary>
internal sealed partial class BlockDevice : VhostUserDevice, IDisposable
{
    public const int SectorSize = 512;
    private const int HeaderLength = 16;
    private const byte StatusOk = 0, StatusIoErr = 1, StatusUnsupported = 2;
    private const uint TypeIn = 0, TypeOut = 1, TypeFlush = 4, TypeGetId = 8, TypeDiscard = 11, TypeWriteZeroes = 13;
    private const int MaxSegments = 126;
    private const uint MaxDiscardSectors = 1 << 22;

    private readonly SafeFileHandle _file;
    private readonly bool _readOnly;
    private readonly int _queues;
    private readonly string _serial;
    private readonly ulong _capacitySectors;
    private readonly ThreadLocal<byte[]> _buffer = new(() => new byte[1 << 20]);

    private readonly int _depth;
    private readonly ConcurrentDictionary<Virtqueue, QueueState> _running = new();

    private readonly TimeSpan _latency;

    // Held I/O (HoldRequests): reads and writes started while held wait before touching the image, so they stay
    // taken from the ring and not completed until released. Counted per queue (index) for the Held event.
    private TaskCompletionSource? _hold;
    private readonly long[] _heldReads, _heldWrites;

    /// <param name="ioThreads">Threads for reads and writes that would wait for the disk; 0: the worker does them.</param>
    /// <param name="io">The image's system calls (tests pass a fake); by default preadv2/pwritev2 on <paramref name="file"/>.</param>
    public BlockDevice(SafeFileHandle file, long size, bool readOnly, int queues, string serial, int queueDepth = 1, TimeSpan latency = default,
        int ioThreads = 0, IBlockFile? io = null)
    {
        _io = io ?? new BlockFile(file);
        _threads = ioThreads > 0 && queueDepth > 1 ? new IoThreads(_io, ioThreads) : null;
        _heldReads = new long[queues];
        _heldWrites = new long[queues];
        _depth = queueDepth;
        _latency = latency;
        _file = file;
        _readOnly = readOnly;
        _queues = queues;
        _serial = serial;
        _capacitySectors = (ulong)size / SectorSize;
    }

    public long Requests;

    /// <summary>FLUSH requests served (one host fsync each).</summary>
    public long Flushes;

    public override VirtioDeviceType DeviceType => VirtioDeviceType.Block;


    public override ulong DeviceFeatures =>
        VirtioFeatureBits.Version1 | VirtioFeatureBits.IndirectDesc | VirtioFeatureBits.EventIdx | VirtioFeatureBits.RingPacked
        | VirtioFeatureBits.BlockSegMax | VirtioFeatureBits.BlockBlkSize | VirtioFeatureBits.BlockFlush | VirtioFeatureBits.BlockDiscard
        | VirtioFeatureBits.BlockWriteZeroes | (_readOnly ? VirtioFeatureBits.BlockRo : 0) | (_queues > 1 ? VirtioFeatureBits.BlockMq : 0);

    /// <summary>Requests the SDK handed out again after a restart (inflight tracking) and this device re-executed.</summary>
    public long Resubmitted;

    /// <summary>Bytes read from and written to the image for the guest.</summary>
    public long BytesRead, BytesWritten;

    // Device state (migration, DEVICE_STATE): the counters above travel with the VM, so a destination keeps
    // counting where the source stopped. Version 1 = five little-endian u64: requests, resubmitted, read, written, 0.
    private const int StateLength = 40;

    public override uint StateVersion => 1;

    public override byte[] SaveState()
    {
        var state = new byte[StateLength];
        BinaryPrimitives.WriteInt64LittleEndian(state, Interlocked.Read(ref Requests));
        BinaryPrimitives.WriteInt64LittleEndian(state.AsSpan(8), Interlocked.Read(ref Resubmitted));
        BinaryPrimitives.WriteInt64LittleEndian(state.AsSpan(16), Interlocked.Read(ref BytesRead));
        BinaryPrimitives.WriteInt64LittleEndian(state.AsSpan(24), Interlocked.Read(ref BytesWritten));
        return state;
    }

    public override bool LoadState(uint version, ReadOnlySpan<byte> state)
    {
        if (version != 1 || state.Length != StateLength)
        {
            return false; // a newer (or foreign) format: refuse rather than guess
        }

        long requests = BinaryPrimitives.ReadInt64LittleEndian(state);
        long resubmitted = BinaryPrimitives.ReadInt64LittleEndian(state[8..]);
        long read = BinaryPrimitives.ReadInt64LittleEndian(state[16..]);
        long written = BinaryPrimitives.ReadInt64LittleEndian(state[24..]);
        if (requests < 0 || resubmitted < 0 || read < 0 || written < 0)
        {
            return false;
        }

        Interlocked.Exchange(ref Requests, requests);
        Interlocked.Exchange(ref Resubmitted, resubmitted);
        Interlocked.Exchange(ref BytesRead, read);
        Interlocked.Exchange(ref BytesWritten, written);
        return true;
    }

    // QEMU's vhost-user-blk reads its config space from the backend: CONFIG is mandatory. INFLIGHT_SHMFD:
    // QEMU keeps a buffer in which the SDK records every request taken from a ring until it is completed,
    // so a restarted sample re-executes exactly the requests its predecessor left unfinished.
    public override VhostUserProtocolFeatures ProtocolFeatures => VhostUserProtocolFeatures.Config | VhostUserProtocolFeatures.InflightShmfd;

    public override int QueueCount => _queues;

    public override int ConfigSize => 60;

    public override void ReadConfig(int offset, Span<byte> destination)
    {
        Span<byte> c = stackalloc byte[60];
        c.Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(c, _capacitySectors);
        BinaryPrimitives.WriteUInt32LittleEndian(c[12..], MaxSegments);          // seg_max
        BinaryPrimitives.WriteUInt32LittleEndian(c[20..], SectorSize);           // blk_size
        BinaryPrimitives.WriteUInt16LittleEndian(c[34..], (ushort)_queues);      // num_queues
        BinaryPrimitives.WriteUInt32LittleEndian(c[36..], MaxDiscardSectors);    // max_discard_sectors
        BinaryPrimitives.WriteUInt32LittleEndian(c[40..], 1);                    // max_discard_seg
        BinaryPrimitives.WriteUInt32LittleEndian(c[44..], 1);                    // discard_sector_alignment
        BinaryPrimitives.WriteUInt32LittleEndian(c[48..], MaxDiscardSectors);    // max_write_zeroes_sectors
        BinaryPrimitives.WriteUInt32LittleEndian(c[52..], 1);                    // max_write_zeroes_seg
        c[56] = 0;                                                               // write_zeroes_may_unmap
        c.Slice(offset, destination.Length).CopyTo(destination);
    }

    /// <summary>Executes one request; returns the bytes written into the chain (data + status).</summary>
    internal int Serve(DescriptorChain chain)
    {
        if (chain.WritableLength < 1)
        {
            return 0; // no status byte: nothing can be reported, nothing is done
        }

        int statusOffset = chain.WritableLength - 1;
        Span<byte> header = stackalloc byte[HeaderLength];
        if (chain.ReadReadable(0, header) != HeaderLength)
        {
            return Status(chain, statusOffset, StatusIoErr, 0);
        }

        uint type = BinaryPrimitives.ReadUInt32LittleEndian(header);
        ulong sector = BinaryPrimitives.ReadUInt64LittleEndian(header[8..]);
        try
        {
            switch (type)
            {
                case TypeIn:
                {
                    int length = statusOffset;
                    if (!InRange(sector, (ulong)length))
                    {
                        return Status(chain, statusOffset, StatusIoErr, 0);
                    }

                    byte[] buffer = _buffer.Value!;
                    int done = 0;
                    while (done < length)
                    {
                        int n = Math.Min(buffer.Length, length - done);
                        int read = RandomAccess.Read(_file, buffer.AsSpan(0, n), (long)(sector * SectorSize) + done);
                        buffer.AsSpan(read, n - read).Clear();
                        chain.WriteWritable(done, buffer.AsSpan(0, n));
                        done += n;
                    }

                    Interlocked.Add(ref BytesRead, length);
                    return Status(chain, statusOffset, StatusOk, length);
                }

                case TypeOut:
                {
                    if (_readOnly)
                    {
                        return Status(chain, statusOffset, StatusIoErr, 0);
                    }

                    int length = chain.ReadableLength - HeaderLength;
                    if (!InRange(sector, (ulong)length))
                    {
                        return Status(chain, statusOffset, StatusIoErr, 0);
                    }

                    byte[] buffer = _buffer.Value!;
                    int done = 0;
                    while (done < length)
                    {
                        int n = chain.ReadReadable(HeaderLength + done, buffer.AsSpan(0, Math.Min(buffer.Length, length - done)));
                        RandomAccess.Write(_file, buffer.AsSpan(0, n), (long)(sector * SectorSize) + done);
                        done += n;
                    }

                    Interlocked.Add(ref BytesWritten, length);
                    return Status(chain, statusOffset, StatusOk, 0);
                }

                case TypeFlush:
                    if (!_readOnly)
                    {
                        // Every write acked so far has returned from pwrite (inline or on an I/O thread): fsync covers it.
                        RandomAccess.FlushToDisk(_file);
                        Interlocked.Increment(ref Flushes);
                    }

                    return Status(chain, statusOffset, StatusOk, 0);
                case TypeGetId:
                {
                    Span<byte> id = stackalloc byte[20];
                    id.Clear();
                    Encoding.ASCII.GetBytes(_serial.AsSpan(0, Math.Min(_serial.Length, 20)), id);
                    int n = Math.Min(20, statusOffset);
                    chain.WriteWritable(0, id[..n]);
                    return Status(chain, statusOffset, StatusOk, n);
                }

                case TypeDiscard:
                case TypeWriteZeroes:
                    return Status(chain, statusOffset, Zero(chain), 0);
                default:
                    return Status(chain, statusOffset, StatusUnsupported, 0);
            }
        }
        catch (IOException)
        {
            return Status(chain, statusOffset, StatusIoErr, 0);
        }
    }

    /// <summary>DISCARD and WRITE_ZEROES: one 16-byte segment (sector, sectors, flags); both zero the range here.</summary>
    private byte Zero(DescriptorChain chain)
    {
        if (_readOnly)
        {
            return StatusIoErr;
        }

        Span<byte> segment = stackalloc byte[16];
        if (chain.ReadableLength != HeaderLength + 16 || chain.ReadReadable(HeaderLength, segment) != 16)
        {
            return StatusUnsupported;
        }

        ulong sector = BinaryPrimitives.ReadUInt64LittleEndian(segment);
        uint count = BinaryPrimitives.ReadUInt32LittleEndian(segment[8..]);
        uint flags = BinaryPrimitives.ReadUInt32LittleEndian(segment[12..]);
        if ((flags & ~1u) != 0 || count > MaxDiscardSectors || !InRange(sector, (ulong)count * SectorSize))
        {
            return StatusIoErr;
        }

        byte[] zeros = _buffer.Value!;
        Array.Clear(zeros);
        ulong remaining = (ulong)count * SectorSize;
        long position = (long)(sector * SectorSize);
        while (remaining > 0)
        {
            int n = (int)Math.Min((ulong)zeros.Length, remaining);
            RandomAccess.Write(_file, zeros.AsSpan(0, n), position);
            position += n;
            remaining -= (ulong)n;
        }

        return StatusOk;
    }

    /// <summary>True when [sector·512, +length) lies inside the disk (overflow-checked).</summary>
    private bool InRange(ulong sector, ulong length)
    {
        if (sector > _capacitySectors)
        {
            return false;
        }

        ulong start = sector * SectorSize; // cannot overflow: sector ≤ capacity ≤ 2^63/512
        ulong end = start + length;
        return end >= start && end <= _capacitySectors * SectorSize;
    }

    private static int Status(DescriptorChain chain, int statusOffset, byte status, int dataWritten)
    {
        chain.WriteWritable(statusOffset, [status]);
        return dataWritten + 1; // used length: the data written plus the status byte (as QEMU reports it)
    }
}
