using System.Buffers;
using System.Globalization;
using System.Text;
using VhostCompat.Protocol;

namespace VhostCompat.Proxy;

/// <summary>
/// The text form of a trace line: <c>TIME +MSms sN #SEQ DIR REQUEST flags=.. size=.. name=value... fdI=type(..)</c>,
/// one line each. Values with spaces, quotes or <c>=</c> are quoted.
/// </summary>
internal static class TraceText
{
    private static readonly SearchValues<char> NeedsQuotes = SearchValues.Create(" \"=,()");

    public static void Append(StringBuilder sb, TraceEntry e)
    {
        var c = CultureInfo.InvariantCulture;
        sb.Append(e.Time.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", c));
        sb.Append(c, $" +{e.Milliseconds:0.000}ms s{e.Session} ");
        if (e.EventText is not null)
        {
            sb.Append("-- ");
            AppendValue(sb, e.EventText, quoteSpaces: false);
            return;
        }

        sb.Append(c, $"#{e.Sequence} {TraceEntry.DirectionText(e.Direction)} {e.Request} flags=");
        AppendFlags(sb, e.Flags);
        sb.Append(c, $" size={e.Size}");
        if (e.Payload.Malformed)
        {
            // "malformed: N bytes" reads better than malformed=N; the hex follows as a field.
            sb.Append(c, $" malformed: {e.Payload.Fields[0].Number} bytes");
            for (int i = 1; i < e.Payload.Fields.Count; i++)
            {
                sb.Append(' ');
                AppendField(sb, string.Empty, e.Payload.Fields[i]);
            }
        }
        else
        {
            foreach (var f in e.Payload.Fields)
            {
                sb.Append(' ');
                AppendField(sb, string.Empty, f);
            }
        }

        for (int i = 0; i < e.Fds.Count; i++)
        {
            sb.Append(c, $" fd{i}={e.Fds[i].Type}");
            var details = e.Fds[i].Details;
            if (details.Count > 0)
            {
                sb.Append('(');
                for (int j = 0; j < details.Count; j++)
                {
                    if (j > 0)
                    {
                        sb.Append(',');
                    }

                    AppendField(sb, string.Empty, details[j]);
                }

                sb.Append(')');
            }
        }

        if (e.ReplyTo is not null)
        {
            sb.Append(c, $" reply-to={e.ReplyTo}#{e.ReplyToSequence} rtt-us={e.RoundTripMicroseconds}");
        }

        if (e.Unmatched is not null)
        {
            sb.Append(" unmatched=");
            AppendValue(sb, e.Unmatched, quoteSpaces: true);
        }

        if (e.Note is not null)
        {
            sb.Append(" note=");
            AppendValue(sb, e.Note, quoteSpaces: true);
        }
    }

    /// <summary>Header flags as <c>0x5(v1,REPLY)</c>; reserved bits as <c>reserved:0x..</c>.</summary>
    public static void AppendFlags(StringBuilder sb, uint flags)
    {
        var c = CultureInfo.InvariantCulture;
        sb.Append(c, $"0x{flags:x}(v{flags & MessageHeader.VersionMask}");
        if ((flags & MessageHeader.ReplyFlag) != 0)
        {
            sb.Append(",REPLY");
        }

        if ((flags & MessageHeader.NeedReplyFlag) != 0)
        {
            sb.Append(",NEED_REPLY");
        }

        if ((flags & MessageHeader.ReservedMask) != 0)
        {
            sb.Append(c, $",reserved:0x{flags & MessageHeader.ReservedMask:x}");
        }

        sb.Append(')');
    }

    private static void AppendField(StringBuilder sb, string prefix, TraceField f)
    {
        var c = CultureInfo.InvariantCulture;
        if (f.Kind == TraceValueKind.Items)
        {
            var items = f.Items!;
            for (int i = 0; i < items.Count; i++)
            {
                string p = string.Create(c, $"{prefix}{f.Name}{i}.");
                for (int j = 0; j < items[i].Length; j++)
                {
                    if (i > 0 || j > 0)
                    {
                        sb.Append(' ');
                    }

                    AppendField(sb, p, items[i][j]);
                }
            }

            return;
        }

        sb.Append(prefix).Append(f.Name).Append('=');
        switch (f.Kind)
        {
            case TraceValueKind.Number:
                sb.Append(f.Number.ToString(c));
                break;
            case TraceValueKind.Hex:
                sb.Append("0x").Append(f.Number.ToString("x", c));
                break;
            case TraceValueKind.Bits:
                sb.Append("0x").Append(f.Number.ToString("x", c));
                if (f.Names!.Count > 0)
                {
                    // '|' keeps the list apart from the ',' that separates fd details.
                    sb.Append('(').AppendJoin('|', f.Names).Append(')');
                }

                break;
            case TraceValueKind.Bool:
                sb.Append(f.Number != 0 ? "true" : "false");
                break;
            default:
                AppendValue(sb, f.Text ?? string.Empty, quoteSpaces: true);
                break;
        }
    }

    private static void AppendValue(StringBuilder sb, string value, bool quoteSpaces)
    {
        bool quote = quoteSpaces && (value.Length == 0 || value.AsSpan().IndexOfAny(NeedsQuotes) >= 0);
        bool control = false;
        foreach (char ch in value)
        {
            control |= char.IsControl(ch);
        }

        if (!quote && !control)
        {
            sb.Append(value);
            return;
        }

        // Quoted, with backslash escapes: a trace line never contains a raw newline or control character.
        sb.Append('"');
        foreach (char ch in value)
        {
            if (ch is '"' or '\\')
            {
                sb.Append('\\').Append(ch);
            }
            else if (char.IsControl(ch))
            {
                sb.Append(CultureInfo.InvariantCulture, $"\\x{(int)ch:x2}");
            }
            else
            {
                sb.Append(ch);
            }
        }

        sb.Append('"');
    }
}
