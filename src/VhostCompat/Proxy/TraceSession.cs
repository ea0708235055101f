using System.Buffers;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.Proxy;

/// <summary>
/// Turns every message a vhost-user proxy forwards into one trace line (text or JSON lines):
/// time, session, direction, request name, decoded flags, payload fields by name, the type of every
/// fd, and for a reply the request it answers and the round trip. Thread-safe: lines from concurrent
/// sessions never interleave. Never throws for a malformed payload; an <see cref="IOException"/> or
/// <see cref="ObjectDisposedException"/> from the writer drops the line and counts it in
/// <see cref="DroppedLines"/>.
/// </summary>
internal sealed class SessionTrace
{
    /// <summary>Sessions whose start time and pending requests are remembered; the oldest number is forgotten first.</summary>
    internal const int MaxSessions = 256;

    /// <summary>Requests per session still waiting for a reply; a frontend waits for each reply, so more means replies went missing.</summary>
    internal const int MaxPending = 8;

    private static readonly JsonWriterOptions JsonOptions = new()
    {
        // Trace lines are read by people and log tools, never embedded in HTML.
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        Indented = false,
    };

    private readonly TextWriter _writer;
    private readonly bool _json;
    private readonly TimeProvider _time;
    private readonly Lock _gate = new();
    private readonly Dictionary<uint, SessionState> _sessions = [];
    private readonly StringBuilder _text = new(256);
    private readonly ArrayBufferWriter<byte> _jsonBuffer = new(512);
    private volatile VirtioDeviceType _deviceType = VirtioDeviceType.Net;
    private long _dropped;
    private long _written;

    /// <summary>Creates a trace writing to <paramref name="writer"/>; <paramref name="json"/> selects JSON lines instead of text.</summary>
    /// <param name="writer">Receives one line per message or event (<c>\n</c>-terminated); not disposed by the trace.</param>
    /// <param name="json">True for one compact JSON object per line, false for readable text lines.</param>
    /// <param name="time">Clock for timestamps and round trips; <see cref="TimeProvider.System"/> when null.</param>
    public SessionTrace(TextWriter writer, bool json, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(writer);
        _writer = writer;
        _json = json;
        _time = time ?? TimeProvider.System;
    }

    /// <summary>The device type whose virtio feature names GET/SET_FEATURES are decoded with (default net).</summary>
    public VirtioDeviceType DeviceType
    {
        get => _deviceType;
        set => _deviceType = value;
    }

    /// <summary>Flush the writer after every line (default true: a trace is usually watched live).</summary>
    public bool FlushEachLine { get; set; } = true;

    /// <summary>Lines lost because the writer threw.</summary>
    public long DroppedLines => Interlocked.Read(ref _dropped);

    /// <summary>Lines handed to the writer without an exception.</summary>
    public long WrittenLines => Interlocked.Read(ref _written);

    /// <summary>
    /// Traces one message the proxy read, before it forwards it. <paramref name="fds"/> are raw fd numbers still
    /// open in this process: they are inspected (fstat, fstatfs, seals, /proc/self/fd), never closed or changed.
    /// </summary>
    /// <param name="direction">Which peer sent the message.</param>
    /// <param name="session">The proxy's number for the frontend connection.</param>
    /// <param name="header">The message header as read.</param>
    /// <param name="payload">The payload as read; a length other than <see cref="MessageHeader.Size"/> is traced as malformed.</param>
    /// <param name="fds">The fds that arrived with the message.</param>
    /// <param name="note">Optional text the proxy adds (<c>refused by shield: ...</c>, <c>pinned: 0x1 -&gt; 0x2</c>).</param>
    public void Record(TraceDirection direction, uint session, MessageHeader header, ReadOnlySpan<byte> payload, ReadOnlySpan<int> fds, string? note = null)
    {
        var decoded = payload.Length == header.Size
            ? TracePayload.Decode(header.Request, header.IsReply, payload, DeviceType)
            : Truncated(payload);
        var fdInfo = TraceFd.Describe(fds);
        lock (_gate)
        {
            long now = _time.GetTimestamp();
            var state = State(session, now);
            long seq = ++state.Messages;
            string? replyTo = null;
            long replyToSeq = 0;
            long rttUs = 0;
            string? unmatched = null;
            if (direction == TraceDirection.FrontendToBackend && !header.IsReply
                && (header.NeedReply || PayloadRules.HasOwnReply((FrontendRequest)header.Request)))
            {
                if (state.Pending.Count == MaxPending)
                {
                    state.Pending.RemoveAt(0);
                }

                state.Pending.Add(new PendingRequest(header.Request, seq, now));
            }
            else if (direction == TraceDirection.BackendToFrontend && header.IsReply)
            {
                int i = state.Pending.FindIndex(p => p.Code == header.Request);
                if (i >= 0)
                {
                    var p = state.Pending[i];
                    replyTo = RequestNames.Name(p.Code);
                    replyToSeq = p.Sequence;
                    rttUs = (long)_time.GetElapsedTime(p.Timestamp, now).TotalMicroseconds;

                    // Requests older than the one answered will never be answered: the backend skipped them.
                    state.Pending.RemoveRange(0, i + 1);
                }
                else
                {
                    unmatched = state.Pending.Count == 0
                        ? "no request pending"
                        : $"pending {RequestNames.Name(state.Pending[0].Code)}#{state.Pending[0].Sequence}";
                }
            }

            Emit(new TraceEntry
            {
                Time = _time.GetUtcNow(),
                Milliseconds = _time.GetElapsedTime(state.Start, now).TotalMilliseconds,
                Session = session,
                Sequence = seq,
                Direction = direction,
                Code = header.Request,
                Request = RequestNames.Name(header.Request),
                Flags = header.Flags,
                Size = header.Size,
                Payload = decoded,
                Fds = fdInfo,
                ReplyTo = replyTo,
                ReplyToSequence = replyToSeq,
                RoundTripMicroseconds = rttUs,
                Unmatched = unmatched,
                Note = note,
            });
        }
    }

    /// <summary>Traces a free-form event of a session (<c>frontend connected</c>, <c>backend closed</c>, ...).</summary>
    public void Event(uint session, string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        lock (_gate)
        {
            long now = _time.GetTimestamp();
            var state = State(session, now);
            Emit(new TraceEntry
            {
                Time = _time.GetUtcNow(),
                Milliseconds = _time.GetElapsedTime(state.Start, now).TotalMilliseconds,
                Session = session,
                EventText = text,
            });
        }
    }

    private static TraceDecoded Truncated(ReadOnlySpan<byte> payload)
    {
        var fields = new List<TraceField>(2) { TraceField.Num("malformed", (ulong)payload.Length) };
        if (!payload.IsEmpty)
        {
            fields.Add(TraceField.Str("hex", TracePayload.Hex(payload)));
        }

        return new TraceDecoded(fields, true);
    }

    private SessionState State(uint session, long now)
    {
        if (_sessions.TryGetValue(session, out var state))
        {
            return state;
        }

        if (_sessions.Count >= MaxSessions)
        {
            uint oldest = uint.MaxValue;
            foreach (uint key in _sessions.Keys)
            {
                oldest = Math.Min(oldest, key);
            }

            _sessions.Remove(oldest);
        }

        state = new SessionState(now);
        _sessions.Add(session, state);
        return state;
    }

    // Called under _gate.
    private void Emit(TraceEntry entry)
    {
        try
        {
            if (_json)
            {
                _jsonBuffer.ResetWrittenCount();
                using (var w = new Utf8JsonWriter(_jsonBuffer, JsonOptions))
                {
                    TraceJson.Write(w, entry);
                }

                _writer.Write(Encoding.UTF8.GetString(_jsonBuffer.WrittenSpan) + "\n");
            }
            else
            {
                _text.Clear();
                TraceText.Append(_text, entry);
                _text.Append('\n');
                _writer.Write(_text);
            }

            if (FlushEachLine)
            {
                _writer.Flush();
            }

            _written++;
        }
        catch (IOException)
        {
            _dropped++;
        }
        catch (ObjectDisposedException)
        {
            _dropped++;
        }
    }

    private sealed class SessionState(long start)
    {
        public long Start { get; } = start;

        public long Messages { get; set; }

        public List<PendingRequest> Pending { get; } = new(MaxPending);
    }

    private readonly record struct PendingRequest(uint Code, long Sequence, long Timestamp);
}
