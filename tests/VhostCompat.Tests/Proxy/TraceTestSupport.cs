using System.Text.Json;
using VhostCompat.Protocol;
using VhostCompat.Proxy;

namespace VhostCompat.Tests.Proxy;

/// <summary>A clock that moves only when told to: timestamps and round trips in trace lines become exact values.</summary>
internal sealed class ManualClock : TimeProvider
{
    private long _ticks;

    public DateTimeOffset Now { get; set; } = new(2025, 6, 1, 12, 0, 0, TimeSpan.Zero);

    public override long TimestampFrequency => TimeSpan.TicksPerSecond;

    public override long GetTimestamp() => _ticks;

    public override DateTimeOffset GetUtcNow() => Now;

    public void Advance(TimeSpan by)
    {
        _ticks += by.Ticks;
        Now += by;
    }
}

/// <summary>A SessionTrace writing to memory, in text and JSON at once (two traces fed the same messages).</summary>
internal sealed class TraceHarness
{
    private readonly StringWriter _text = new() { NewLine = "\n" };
    private readonly StringWriter _json = new() { NewLine = "\n" };

    public TraceHarness()
    {
        Text = new SessionTrace(_text, json: false, Clock);
        Json = new SessionTrace(_json, json: true, Clock);
    }

    public ManualClock Clock { get; } = new();

    public SessionTrace Text { get; }

    public SessionTrace Json { get; }

    public string[] TextLines => _text.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);

    public JsonElement[] JsonLines => _json.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries)
        .Select(l => JsonDocument.Parse(l).RootElement.Clone()).ToArray();

    public string LastText => TextLines[^1];

    public JsonElement LastJson => JsonLines[^1];

    public JsonElement LastFields => LastJson.GetProperty("fields");

    public void Request(FrontendRequest request, byte[] payload, uint flags = MessageHeader.Version, int[]? fds = null, string? note = null, uint session = 1) =>
        Send(TraceDirection.FrontendToBackend, (uint)request, flags, payload, fds, note, session);

    public void Reply(FrontendRequest request, byte[] payload, uint session = 1) =>
        Send(TraceDirection.BackendToFrontend, (uint)request, MessageHeader.ReplyFlags, payload, null, null, session);

    public void Send(TraceDirection direction, uint code, uint flags, byte[] payload, int[]? fds = null, string? note = null, uint session = 1)
    {
        var header = new MessageHeader(code, flags, (uint)payload.Length);
        Text.Record(direction, session, header, payload, fds ?? [], note);
        Json.Record(direction, session, header, payload, fds ?? [], note);
    }

    public void Event(uint session, string text)
    {
        Text.Event(session, text);
        Json.Event(session, text);
    }
}
