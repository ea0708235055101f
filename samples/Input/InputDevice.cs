using System.Buffers.Binary;
using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using VhostCompat.Backend;
using VhostCompat.Queues;
using VhostCompat.Virtio;

namespace VhostCompat.Samples.Input;

/// <summary>
/// virtio-input keyboard (device id 18). Queue 0, eventq: the driver posts 8-byte device-writable buffers ahead of
/// time and the device fills one per event (struct virtio_input_event: le16 type, le16 code, le32 value) — an
/// event-driven queue, so the buffers are held (<see cref="HeldChains"/>) until there is a key to send. Queue 1,
/// statusq: the driver sends events the other way, here the LEDs the guest sets. The config space is the
/// select/subsel image of <see cref="VirtioInputConfig"/>.
/// </summary>
internal sealed partial class InputDevice : VhostUserDevice
{
    private const int EventQueue = 0, StatusQueue = 1;
    private readonly VirtioInputConfig _config = new();
    private readonly ConcurrentQueue<(ushort Type, ushort Code, uint Value)> _pending = new();
    private readonly string _text;
    private readonly bool _startOnLed;
    private readonly int _keyIntervalMs;
    private readonly Lock _typing = new();
    private Timer? _keyTimer;
    private int _nextKey;
    private readonly ILogger _logger;
    private HeldChains? _held; // eventq worker only
    private volatile Virtqueue? _eventQueue;
    private int _typed; // 1 once the text was queued for this connection
    private uint _leds;
    private int _configReads, _configWrites, _eventKicks, _statusKicks, _delivered;

    public InputDevice(string text, bool startOnLed, int keyIntervalMs, ILogger logger)
    {
        _text = text;
        _startOnLed = startOnLed;
        _keyIntervalMs = keyIntervalMs;
        _logger = logger;
        _config.Name("VhostCompat keyboard").Serial("vhostcompat-input-0")
            .DeviceIds(busType: 0x06 /* BUS_VIRTUAL */, vendor: 0x0001, product: 0x0001, version: 0x0001)
            .EventCodes((byte)KeyMap.EvKey, Enumerable.Range(1, KeyMap.MaxKey))
            .EventCodes((byte)KeyMap.EvLed, [0, 1, 2])
            .EventCodes((byte)KeyMap.EvRep, [0, 1]);
    }

    /// <summary>Turns the two-character sequence \n of a command line into a newline.</summary>
    public static string Unescape(string text) => text.Replace("\\n", "\n", StringComparison.Ordinal);

    public override VirtioDeviceType DeviceType => VirtioDeviceType.Input;

    public override ulong DeviceFeatures => VirtioFeatureBits.Version1 | VirtioFeatureBits.IndirectDesc | VirtioFeatureBits.EventIdx;

    // QEMU's vhost-user-input reads the config space from the backend (GET_CONFIG): it needs the CONFIG protocol feature.
    public override VhostUserProtocolFeatures ProtocolFeatures => VhostUserProtocolFeatures.Config;

    public override int QueueCount => 2;

    public override ushort MaxQueueSize => 256;

    public override int ConfigSize => VirtioInputConfig.Size;

    public override void ReadConfig(int offset, Span<byte> destination)
    {
        _configReads++;
        _config.Read(offset, destination);
        ConfigRead(_logger, offset, destination.Length, _config.Select, _config.Subsel);
    }

    // QEMU writes all 136 bytes back on every byte the driver writes: only select and subsel are taken, the
    // read-only rest is ignored — refusing it would break every query.
    public override bool WriteConfig(int offset, ReadOnlySpan<byte> data, bool migration)
    {
        _configWrites++;
        _config.Write(offset, data);
        ConfigWritten(_logger, offset, data.Length, _config.Select, _config.Subsel);
        return true;
    }

    public override void OnQueueStarted(Virtqueue queue)
    {
        if (queue.Index == EventQueue)
        {
            _held = new HeldChains(queue);
            _eventQueue = queue;
        }
    }

    public override void OnQueueEnabledChanged(Virtqueue queue, bool enabled)
    {
        if (queue.Index == EventQueue && enabled && !_startOnLed)
        {
            TypeText();
        }
    }

    public override void OnQueueKicked(Virtqueue queue)
    {
        if (queue.Index == EventQueue)
        {
            _eventKicks++;
            _held!.TakeAvailable();
            Deliver();
        }
        else if (queue.Index == StatusQueue)
        {
            Interlocked.Increment(ref _statusKicks);
            ReadStatus(queue);
        }
    }

    public override void OnQueueStopped(Virtqueue queue)
    {
        if (queue.Index == EventQueue)
        {
            _held?.Clear();
            _held = null;
            _eventQueue = null;
        }
    }

    public override void OnDisconnected()
    {
        StopTyping();
        ConfigSummary(_logger, _configReads, _configWrites, _eventKicks, _delivered, _statusKicks);
        _configReads = _configWrites = _eventKicks = _delivered = _statusKicks = 0;
        _pending.Clear();
        _typed = 0;
        _leds = 0;
    }

    /// <summary>
    /// Starts typing: one key (press, sync, release, sync) every --key-interval-ms, as a person would. A guest reads
    /// evdev in its own time, and the kernel drops events (SYN_DROPPED) once a reader's 64-event buffer is full, so a
    /// keyboard that sends a whole text at once loses most of it. The timer runs on the thread pool; the events reach
    /// the eventq's worker through Wake, the thread-safe way back onto it.
    /// </summary>
    private void TypeText()
    {
        if (Interlocked.Exchange(ref _typed, 1) == 1)
        {
            return;
        }

        Typing(_logger, _text.Length, _keyIntervalMs);
        lock (_typing)
        {
            _nextKey = 0;
            _keyTimer = new Timer(_ => NextKey(), null, 0, Math.Max(_keyIntervalMs, 1));
        }
    }

    private void NextKey()
    {
        lock (_typing)
        {
            do
            {
                if (_keyTimer is null || _nextKey >= _text.Length)
                {
                    _keyTimer?.Dispose();
                    _keyTimer = null;
                    break;
                }

                KeyMap.TryGet(_text[_nextKey++], out ushort code, out bool shift);
                if (shift)
                {
                    Key(KeyMap.KeyLeftShift, 1);
                }

                Key(code, 1);
                Key(code, 0);
                if (shift)
                {
                    Key(KeyMap.KeyLeftShift, 0);
                }
            }
            while (_keyIntervalMs == 0);
        }

        _eventQueue?.Wake();
    }

    private void StopTyping()
    {
        lock (_typing)
        {
            _keyTimer?.Dispose();
            _keyTimer = null;
        }
    }

    private void Key(ushort code, uint value)
    {
        _pending.Enqueue((KeyMap.EvKey, code, value));
        _pending.Enqueue((KeyMap.EvSyn, 0, 0));
    }

    /// <summary>eventq worker: one pending event per held buffer; what does not fit waits for the driver's next buffers.</summary>
    private void Deliver()
    {
        Span<byte> ev = stackalloc byte[8];
        while (_held!.Count > 0 && _pending.TryPeek(out var e))
        {
            BinaryPrimitives.WriteUInt16LittleEndian(ev, e.Type);
            BinaryPrimitives.WriteUInt16LittleEndian(ev[2..], e.Code);
            BinaryPrimitives.WriteUInt32LittleEndian(ev[4..], e.Value);
            _held.TryComplete(ev);
            _pending.TryDequeue(out _);
            _delivered++;
        }
    }

    /// <summary>statusq: each chain carries one event from the driver; the buffer is guest memory, copied once, then checked.</summary>
    private void ReadStatus(Virtqueue queue)
    {
        Span<byte> ev = stackalloc byte[8];
        while (queue.TryPop(out DescriptorChain? chain))
        {
            int n = chain.ReadReadable(0, ev);
            queue.Push(chain, 0);
            ushort type = BinaryPrimitives.ReadUInt16LittleEndian(ev);
            ushort code = BinaryPrimitives.ReadUInt16LittleEndian(ev[2..]);
            uint value = BinaryPrimitives.ReadUInt32LittleEndian(ev[4..]);
            if (n != 8 || type != KeyMap.EvLed || code >= KeyMap.LedNames.Length || value > 1)
            {
                StatusIgnored(_logger, n, type, code, value);
                continue;
            }

            uint leds = value == 1 ? _leds | (1u << code) : _leds & ~(1u << code);
            if (leds != _leds)
            {
                _leds = leds;
                LedChanged(_logger, KeyMap.LedNames[code], value == 1 ? "on" : "off", leds);
                if (_startOnLed)
                {
                    TypeText();
                }
            }
        }
    }

    [LoggerMessage(300, LogLevel.Information, "LED {Led} {State} (LEDs 0x{Leds:x})")]
    private static partial void LedChanged(ILogger logger, string led, string state, uint leds);

    [LoggerMessage(301, LogLevel.Information, "Typing {Characters} characters, one key every {Interval} ms")]
    private static partial void Typing(ILogger logger, int characters, int interval);

    [LoggerMessage(302, LogLevel.Debug, "Status event ignored: {Length} bytes, type {Type}, code {Code}, value {Value}")]
    private static partial void StatusIgnored(ILogger logger, int length, ushort type, ushort code, uint value);

    [LoggerMessage(303, LogLevel.Debug, "GET_CONFIG {Offset}+{Length} (select 0x{Select:x2}, subsel 0x{Subsel:x2})")]
    private static partial void ConfigRead(ILogger logger, int offset, int length, byte select, byte subsel);

    [LoggerMessage(304, LogLevel.Debug, "SET_CONFIG {Offset}+{Length} (now select 0x{Select:x2}, subsel 0x{Subsel:x2})")]
    private static partial void ConfigWritten(ILogger logger, int offset, int length, byte select, byte subsel);

    [LoggerMessage(305, LogLevel.Information, "Connection ended after {Reads} config reads, {Writes} config writes, {EventCalls} eventq handler calls for {Events} events, {StatusCalls} statusq handler calls")]
    private static partial void ConfigSummary(ILogger logger, int reads, int writes, int eventCalls, int events, int statusCalls);
}
