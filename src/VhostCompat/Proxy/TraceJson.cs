using System.Globalization;
using System.Text.Json;
using VhostCompat.Protocol;

namespace VhostCompat.Proxy;

/// <summary>
/// The JSON-lines form of a trace line: one compact object with stable member names — <c>t</c>, <c>ms</c>,
/// <c>session</c>, <c>seq</c>, <c>dir</c>, <c>request</c>, <c>code</c>, <c>flags</c>, <c>size</c>, <c>fields</c>,
/// <c>fds</c>, then when they apply <c>reply-to</c>, <c>reply-to-seq</c>, <c>rtt-us</c>, <c>unmatched</c>, <c>note</c>;
/// an event line has <c>t</c>, <c>ms</c>, <c>session</c>, <c>event</c>.
/// </summary>
internal static class TraceJson
{
    public static void Write(Utf8JsonWriter w, TraceEntry e)
    {
        w.WriteStartObject();
        w.WriteString("t", e.Time.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture));
        w.WriteNumber("ms", Math.Round(e.Milliseconds, 3));
        w.WriteNumber("session", e.Session);
        if (e.EventText is not null)
        {
            w.WriteString("event", e.EventText);
            w.WriteEndObject();
            return;
        }

        w.WriteNumber("seq", e.Sequence);
        w.WriteString("dir", TraceEntry.DirectionText(e.Direction));
        w.WriteString("request", e.Request);
        w.WriteNumber("code", e.Code);
        w.WriteStartObject("flags");
        w.WriteString("value", Hex(e.Flags));
        w.WriteNumber("version", e.Flags & MessageHeader.VersionMask);
        w.WriteBoolean("reply", (e.Flags & MessageHeader.ReplyFlag) != 0);
        w.WriteBoolean("need-reply", (e.Flags & MessageHeader.NeedReplyFlag) != 0);
        if ((e.Flags & MessageHeader.ReservedMask) != 0)
        {
            w.WriteString("reserved", Hex(e.Flags & MessageHeader.ReservedMask));
        }

        w.WriteEndObject();
        w.WriteNumber("size", e.Size);
        w.WriteStartObject("fields");
        foreach (var f in e.Payload.Fields)
        {
            WriteField(w, f);
        }

        w.WriteEndObject();
        w.WriteStartArray("fds");
        foreach (var fd in e.Fds)
        {
            w.WriteStartObject();
            w.WriteNumber("fd", fd.Fd);
            w.WriteString("type", fd.Type);
            foreach (var f in fd.Details)
            {
                WriteField(w, f);
            }

            w.WriteEndObject();
        }

        w.WriteEndArray();
        if (e.ReplyTo is not null)
        {
            w.WriteString("reply-to", e.ReplyTo);
            w.WriteNumber("reply-to-seq", e.ReplyToSequence);
            w.WriteNumber("rtt-us", e.RoundTripMicroseconds);
        }

        if (e.Unmatched is not null)
        {
            w.WriteString("unmatched", e.Unmatched);
        }

        if (e.Note is not null)
        {
            w.WriteString("note", e.Note);
        }

        w.WriteEndObject();
    }

    private static void WriteField(Utf8JsonWriter w, TraceField f)
    {
        switch (f.Kind)
        {
            case TraceValueKind.Number:
                w.WriteNumber(f.Name, f.Number);
                break;
            case TraceValueKind.Hex:
                w.WriteString(f.Name, Hex(f.Number));
                break;
            case TraceValueKind.Bits:
                w.WriteStartObject(f.Name);
                w.WriteString("value", Hex(f.Number));
                w.WriteStartArray("names");
                foreach (string n in f.Names!)
                {
                    w.WriteStringValue(n);
                }

                w.WriteEndArray();
                w.WriteEndObject();
                break;
            case TraceValueKind.Bool:
                w.WriteBoolean(f.Name, f.Number != 0);
                break;
            case TraceValueKind.Items:
                w.WriteStartArray(f.Name);
                foreach (var item in f.Items!)
                {
                    w.WriteStartObject();
                    foreach (var member in item)
                    {
                        WriteField(w, member);
                    }

                    w.WriteEndObject();
                }

                w.WriteEndArray();
                break;
            default:
                w.WriteString(f.Name, f.Text);
                break;
        }
    }

    private static string Hex(ulong value) => "0x" + value.ToString("x", CultureInfo.InvariantCulture);
}
