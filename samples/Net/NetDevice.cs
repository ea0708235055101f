using Microsoft.Extensions.Logging;
using VhostCompat.Backend;
using VhostCompat.Compat;
using VhostCompat.Queues;
using VhostCompat.Virtio;

namespace VhostCompat.Samples.Net;

/// <summary>
/// One port of the switch: a virtio-net device whose TX frames go into the <see cref="L2Switch"/>
/// and whose RX queue receives frames from the other ports. In sink mode TX frames are counted
/// and dropped (for benchmarks).
/// </summary>
internal sealed partial class NetDevice : VhostUserDevice
{
    private const int NetHeaderLength = 12;
    private readonly ILogger _logger;
    private readonly int _queuePairs;
    private readonly int _port;
    private readonly L2Switch _switch;
    private readonly bool _sink;
    private readonly byte[] _frame = new byte[NetHeaderLength + 65536];
    private readonly DescriptorChain?[] _burst = new DescriptorChain?[32]; // every port runs on the switch's one worker
    private readonly ProfileCatalog _catalog;
    private readonly ulong _features;
    private readonly uint _stateVersion;

    /// <param name="stateVersion">The device-state format this build writes and reads (1; another number emulates a build with a foreign format).</param>
    public NetDevice(int port, L2Switch @switch, int queuePairs, bool sink, ILogger logger, int build = NetCatalog.LatestBuild, uint stateVersion = 1)
    {
        _stateVersion = stateVersion;
        _port = port;
        _catalog = NetCatalog.For(build, queuePairs);
        _features = NetCatalog.Features(_catalog);
        _switch = @switch;
        _queuePairs = queuePairs;
        _sink = sink;
        _logger = logger;
    }

    public override VirtioDeviceType DeviceType => VirtioDeviceType.Net;

    // No checksum/TSO offloads: the guest computes checksums and sends MTU-sized frames, which this
    // switch can carry end to end between any two ports. What a build can do is its catalog's union.
    public override ulong DeviceFeatures => _features;

    public override ProfileCatalog Catalog => _catalog;

    public override int QueueCount => 2 * _queuePairs;

    // QEMU's vhost-user-net compares GET_QUEUE_NUM with netdev queues= (queue pairs).
    public override ulong QueueNumReply => (ulong)_queuePairs;

    // Announce migrated guests that cannot announce themselves (SEND_RARP).
    public override VhostCompat.Virtio.VhostUserProtocolFeatures ProtocolFeatures => VhostCompat.Virtio.VhostUserProtocolFeatures.Rarp;

    // Device state (DEVICE_STATE, migration): the MACs the switch learned on this port and the port's counters, so a
    // destination switch delivers to the migrated guest at once instead of flooding until it speaks, and counts on.
    // Version 1: u16 count, count × 6-byte MAC, then tx packets, tx bytes, rx packets, rx dropped (i64, little-endian).
    // --state-version N emulates a build whose format is N (same layout): it writes N and reads only N.
    private const int MaxStateMacs = 4096;

    public override uint StateVersion => _stateVersion;

    public override byte[] SaveState()
    {
        ulong[] macs = _switch.MacsOn(_port);
        int count = Math.Min(macs.Length, MaxStateMacs);
        var state = new byte[2 + (6 * count) + 32];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16LittleEndian(state, (ushort)count);
        for (int i = 0; i < count; i++)
        {
            Span<byte> mac = state.AsSpan(2 + (6 * i), 6);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(mac, (ushort)(macs[i] >> 32));
            System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(mac[2..], (uint)macs[i]);
        }

        L2Switch.PortStats s = _switch.Stats[_port];
        Span<byte> counters = state.AsSpan(2 + (6 * count));
        System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(counters, Interlocked.Read(ref s.TxPackets));
        System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(counters[8..], Interlocked.Read(ref s.TxBytes));
        System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(counters[16..], Interlocked.Read(ref s.RxPackets));
        System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(counters[24..], Interlocked.Read(ref s.RxDropped));
        LogStateSaved(_logger, _port, _stateVersion, count, MacList(macs.AsSpan(0, count)), Counters(counters), state.Length);
        return state;
    }

    public override bool LoadState(uint version, ReadOnlySpan<byte> state)
    {
        if (version != _stateVersion)
        {
            LogStateRefused(_logger, _port, version, $"this build reads only version {_stateVersion}");
            return false;
        }

        if (state.Length < 2 + 32)
        {
            LogStateRefused(_logger, _port, version, $"{state.Length} bytes is shorter than an empty table with counters");
            return false;
        }

        int count = System.Buffers.Binary.BinaryPrimitives.ReadUInt16LittleEndian(state);
        if (count > MaxStateMacs || state.Length != 2 + (6 * count) + 32)
        {
            LogStateRefused(_logger, _port, version, $"{count} MAC(s) do not fit {state.Length} bytes");
            return false;
        }

        var macs = new ulong[count];
        for (int i = 0; i < count; i++)
        {
            ReadOnlySpan<byte> mac = state.Slice(2 + (6 * i), 6);
            if ((mac[0] & 1) != 0)
            {
                LogStateRefused(_logger, _port, version, "a multicast MAC (only unicast addresses are ever learned)");
                return false;
            }

            macs[i] = ((ulong)System.Buffers.Binary.BinaryPrimitives.ReadUInt16BigEndian(mac) << 32) | System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(mac[2..]);
        }

        ReadOnlySpan<byte> counters = state[(2 + (6 * count))..];
        var values = new long[4];
        for (int k = 0; k < values.Length; k++)
        {
            values[k] = System.Buffers.Binary.BinaryPrimitives.ReadInt64LittleEndian(counters[(8 * k)..]);
            if (values[k] < 0)
            {
                LogStateRefused(_logger, _port, version, "a negative counter");
                return false;
            }
        }

        foreach (ulong mac in macs)
        {
            _switch.Learn(_port, mac);
        }

        L2Switch.PortStats s = _switch.Stats[_port];
        Interlocked.Exchange(ref s.TxPackets, values[0]);
        Interlocked.Exchange(ref s.TxBytes, values[1]);
        Interlocked.Exchange(ref s.RxPackets, values[2]);
        Interlocked.Exchange(ref s.RxDropped, values[3]);
        LogStateLoaded(_logger, _port, version, count, MacList(macs), Counters(counters), MacList(_switch.MacsOn(_port)));
        return true;
    }

    private static string MacList(ReadOnlySpan<ulong> macs)
    {
        var parts = new string[macs.Length];
        for (int i = 0; i < macs.Length; i++)
        {
            parts[i] = MacText(macs[i]);
        }

        return string.Join(' ', parts);
    }

    /// <summary>"52:54:00:12:34:56" for the 48-bit address in the low bits of <paramref name="mac"/>.</summary>
    private static string MacText(ulong mac)
    {
        var bytes = new byte[8];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(bytes, mac);
        string hex = Convert.ToHexStringLower(bytes, 2, 6);
        return string.Join(':', Enumerable.Range(0, 6).Select(k => hex.Substring(2 * k, 2)));
    }

    private static string Counters(ReadOnlySpan<byte> c) => string.Create(
        System.Globalization.CultureInfo.InvariantCulture,
        $"tx_packets={System.Buffers.Binary.BinaryPrimitives.ReadInt64LittleEndian(c)} tx_bytes={System.Buffers.Binary.BinaryPrimitives.ReadInt64LittleEndian(c[8..])} rx_packets={System.Buffers.Binary.BinaryPrimitives.ReadInt64LittleEndian(c[16..])} rx_dropped={System.Buffers.Binary.BinaryPrimitives.ReadInt64LittleEndian(c[24..])}");

    [LoggerMessage(102, LogLevel.Information, "port {Port}: loaded device state v{Version}: {Count} MAC(s) ({Macs}), counters {Counters}; the port's table now: {Table}")]
    private static partial void LogStateLoaded(ILogger logger, int port, uint version, int count, string macs, string counters, string table);

    [LoggerMessage(103, LogLevel.Information, "port {Port}: saved device state v{Version}: {Count} MAC(s) ({Macs}), counters {Counters}; {Bytes} bytes")]
    private static partial void LogStateSaved(ILogger logger, int port, uint version, int count, string macs, string counters, int bytes);

    [LoggerMessage(104, LogLevel.Warning, "port {Port}: refused device state v{Version}: {Reason}")]
    private static partial void LogStateRefused(ILogger logger, int port, uint version, string reason);

    public override bool OnSendRarp(ReadOnlySpan<byte> mac)
    {
        Span<byte> frame = stackalloc byte[60];
        frame.Clear();
        frame[..6].Fill(0xFF);                       // broadcast
        mac.CopyTo(frame[6..]);                      // from the guest's MAC
        frame[12] = 0x80;                            // ethertype 0x8035: RARP
        frame[13] = 0x35;
        frame[15] = 1;                               // hardware type: Ethernet
        frame[16] = 0x08;                            // protocol type: IPv4
        frame[18] = 6;                               // hardware address length
        frame[19] = 4;                               // protocol address length
        frame[21] = 3;                               // operation: reverse request
        mac.CopyTo(frame[22..]);                     // sender hardware address
        mac.CopyTo(frame[32..]);                     // target hardware address
        _switch.Forward(_port, frame);               // learns the MAC on this port and floods the rest
        return true;
    }

    public override void OnQueueStarted(Virtqueue queue)
    {
        if (queue.Index == 0)
        {
            _switch.SetRx(_port, queue);
        }
    }

    public override void OnQueueStopped(Virtqueue queue)
    {
        if (queue.Index == 0)
        {
            _switch.SetRx(_port, null);
        }
    }

    public override void OnQueueKicked(Virtqueue queue)
    {
        if (queue.Index % 2 == 0)
        {
            return; // RX: new buffers; frames are dropped rather than queued when none are posted.
        }

        L2Switch.PortStats stats = _switch.Stats[_port];
        while (true)
        {
            // A burst is popped before any frame is read: the SDK starts fetching each frame (written by the guest on
            // another core) as it walks the chain, so the copies below find them in cache instead of waiting in turn.
            int n = 0;
            while (n < _burst.Length && queue.TryPop(out DescriptorChain? popped))
            {
                _burst[n++] = popped;
            }

            if (n == 0)
            {
                return;
            }

            for (int i = 0; i < n; i++)
            {
                DescriptorChain chain = _burst[i]!;
                _burst[i] = null;
                Transmit(queue, chain, stats);
            }
        }
    }

    private void Transmit(Virtqueue queue, DescriptorChain chain, L2Switch.PortStats stats)
    {
        int length = chain.ReadableLength;
        if (!_sink && queue.IsEnabled && length > NetHeaderLength && length <= _frame.Length)
        {
            chain.ReadReadable(0, _frame.AsSpan(0, length));
            queue.Push(chain, 0);
            stats.TxPackets++;
            stats.TxBytes += length - NetHeaderLength;
            _switch.Forward(_port, _frame.AsSpan(NetHeaderLength, length - NetHeaderLength));
        }
        else
        {
            queue.Push(chain, 0);
            stats.TxPackets++;
            stats.TxBytes += Math.Max(0, length - NetHeaderLength);
        }
    }

    public override void OnQueueStateChanged(VirtqueueInfo queue) =>
        LogQueue(_logger, _port, queue.Index % 2 == 0 ? "rx" : "tx", queue.Index / 2, queue.Started, queue.Enabled, queue.Size);

    public override void OnStatusChanged(DeviceStatus status) => LogStatus(_logger, _port, status);

    [LoggerMessage(100, LogLevel.Information, "port {Port}: net {Direction} queue of pair {Pair}: started={Started} enabled={Enabled} size={Size}")]
    private static partial void LogQueue(ILogger logger, int port, string direction, int pair, bool started, bool enabled, int size);

    [LoggerMessage(101, LogLevel.Information, "port {Port}: net driver status {Status}")]
    private static partial void LogStatus(ILogger logger, int port, DeviceStatus status);
}
