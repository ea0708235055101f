using System.Text.Json;
using VhostCompat.Protocol;
using VhostCompat.Proxy;

namespace VhostCompat.Tests.Proxy;

/// <summary>Replies matched to the request they answer, malformed payloads, JSON members, events, a failing writer.</summary>
public sealed class TraceMatchingTests
{
    [Fact]
    public void Reply_names_the_request_it_answers_and_the_round_trip()
    {
        var t = new TraceHarness();
        t.Request(FrontendRequest.GetFeatures, []);
        t.Clock.Advance(TimeSpan.FromMicroseconds(250));

        t.Reply(FrontendRequest.GetFeatures, U64Payload.Encode(1UL << 32));

        t.LastText.Should().EndWith("reply-to=GET_FEATURES#1 rtt-us=250");
        t.LastJson.GetProperty("reply-to").GetString().Should().Be("GET_FEATURES");
        t.LastJson.GetProperty("reply-to-seq").GetInt64().Should().Be(1);
        t.LastJson.GetProperty("rtt-us").GetInt64().Should().Be(250);
        t.LastJson.TryGetProperty("unmatched", out _).Should().BeFalse();
    }

    [Fact]
    public void Reply_without_a_pending_request_is_unmatched()
    {
        var t = new TraceHarness();
        t.Request(FrontendRequest.SetOwner, []); // no reply expected: nothing pending

        t.Reply(FrontendRequest.SetOwner, U64Payload.Encode(0));

        t.LastText.Should().EndWith("unmatched=\"no request pending\"");
        t.LastJson.GetProperty("unmatched").GetString().Should().Be("no request pending");
        t.LastJson.TryGetProperty("reply-to", out _).Should().BeFalse();
    }

    [Fact]
    public void Reply_with_another_request_code_is_unmatched_and_the_request_stays_pending()
    {
        var t = new TraceHarness();
        t.Request(FrontendRequest.GetVringBase, new VringStatePayload(0, 0).Encode());

        t.Reply(FrontendRequest.GetFeatures, U64Payload.Encode(0));
        t.LastJson.GetProperty("unmatched").GetString().Should().Be("pending GET_VRING_BASE#1");

        t.Reply(FrontendRequest.GetVringBase, new VringStatePayload(0, 7).Encode());
        t.LastJson.GetProperty("reply-to").GetString().Should().Be("GET_VRING_BASE");
    }

    [Fact]
    public void Need_reply_makes_a_set_request_pending_and_each_reply_is_matched_once()
    {
        var t = new TraceHarness();
        t.Request(FrontendRequest.SetVringNum, new VringStatePayload(0, 256).Encode(), MessageHeader.Version | MessageHeader.NeedReplyFlag);

        t.Reply(FrontendRequest.SetVringNum, U64Payload.Encode(0));
        t.LastJson.GetProperty("reply-to").GetString().Should().Be("SET_VRING_NUM");

        t.Reply(FrontendRequest.SetVringNum, U64Payload.Encode(0));
        t.LastJson.GetProperty("unmatched").GetString().Should().Be("no request pending");
    }

    [Fact]
    public void Sessions_are_matched_independently()
    {
        var t = new TraceHarness();
        t.Request(FrontendRequest.GetFeatures, [], session: 1);

        t.Reply(FrontendRequest.GetFeatures, U64Payload.Encode(0), session: 2);
        t.LastJson.GetProperty("unmatched").GetString().Should().Be("no request pending");
        t.LastJson.GetProperty("session").GetUInt32().Should().Be(2);

        t.Reply(FrontendRequest.GetFeatures, U64Payload.Encode(0), session: 1);
        t.LastJson.GetProperty("reply-to").GetString().Should().Be("GET_FEATURES");
    }

    [Fact]
    public void Payload_of_the_wrong_size_is_malformed_with_hex()
    {
        var t = new TraceHarness();

        t.Request(FrontendRequest.SetVringAddr, [1, 2, 3, 4, 5]);

        t.LastText.Should().EndWith("SET_VRING_ADDR flags=0x1(v1) size=5 malformed: 5 bytes hex=0102030405");
        t.LastFields.GetProperty("malformed").GetInt32().Should().Be(5);
        t.LastFields.GetProperty("hex").GetString().Should().Be("0102030405");
    }

    [Fact]
    public void Memory_table_whose_count_does_not_fit_is_malformed_and_hex_is_bounded()
    {
        var t = new TraceHarness();
        var p = new byte[8 + (9 * 32)];
        p[0] = 9; // nine regions: more than the baseline eight

        t.Request(FrontendRequest.SetMemTable, p);

        t.LastFields.GetProperty("malformed").GetInt32().Should().Be(p.Length);
        string hex = t.LastFields.GetProperty("hex").GetString()!;
        hex.Should().Be("09" + new string('0', 126) + "...");
    }

    [Fact]
    public void Payload_shorter_than_the_header_says_is_malformed()
    {
        var t = new TraceHarness();
        var header = new MessageHeader((uint)FrontendRequest.SetFeatures, MessageHeader.Version, 8);

        t.Text.Record(TraceDirection.FrontendToBackend, 1, header, new byte[] { 1, 2 }, []);

        t.LastText.Should().EndWith("SET_FEATURES flags=0x1(v1) size=8 malformed: 2 bytes hex=0102");
    }

    [Fact]
    public void Json_lines_parse_and_carry_the_stable_member_names()
    {
        var t = new TraceHarness();
        t.Event(1, "frontend connected");
        t.Request(FrontendRequest.GetFeatures, [], note: "pinned: 0x1 -> 0x2");
        t.Reply(FrontendRequest.GetFeatures, U64Payload.Encode(0));

        var lines = t.JsonLines;

        lines.Should().HaveCount(3);
        lines[0].EnumerateObject().Select(p => p.Name).Should().Equal("t", "ms", "session", "event");
        lines[0].GetProperty("event").GetString().Should().Be("frontend connected");
        lines[1].EnumerateObject().Select(p => p.Name).Should().Equal("t", "ms", "session", "seq", "dir", "request", "code", "flags", "size", "fields", "fds", "note");
        lines[1].GetProperty("dir").GetString().Should().Be("F>B");
        lines[1].GetProperty("request").GetString().Should().Be("GET_FEATURES");
        lines[1].GetProperty("note").GetString().Should().Be("pinned: 0x1 -> 0x2");
        lines[2].EnumerateObject().Select(p => p.Name).Should().Equal("t", "ms", "session", "seq", "dir", "request", "code", "flags", "size", "fields", "fds", "reply-to", "reply-to-seq", "rtt-us");
        lines[2].GetProperty("dir").GetString().Should().Be("B>F");
        lines[2].GetProperty("t").GetString().Should().Be("2025-06-01T12:00:00.000Z");
    }

    [Fact]
    public void Timestamps_are_utc_with_milliseconds_and_relative_to_the_session_start()
    {
        var t = new TraceHarness();
        t.Event(4, "frontend connected");
        t.Clock.Advance(TimeSpan.FromMilliseconds(12.5));

        t.Request(FrontendRequest.SetOwner, [], session: 4);

        t.LastText.Should().StartWith("2025-06-01T12:00:00.012Z +12.500ms s4 #1 F>B SET_OWNER");
        t.LastJson.GetProperty("ms").GetDouble().Should().Be(12.5);
        t.TextLines[0].Should().Be("2025-06-01T12:00:00.000Z +0.000ms s4 -- frontend connected");
    }

    [Fact]
    public void Notes_with_spaces_are_quoted_and_control_characters_escaped()
    {
        var t = new TraceHarness();

        t.Request(FrontendRequest.SetVringNum, new VringStatePayload(7, 256).Encode(), note: "refused by shield: ring index 7 >= 2\n");

        t.LastText.Should().EndWith("note=\"refused by shield: ring index 7 >= 2\\x0a\"");
        t.TextLines.Should().HaveCount(1);
        t.LastJson.GetProperty("note").GetString().Should().Be("refused by shield: ring index 7 >= 2\n");
    }

    [Fact]
    public void A_writer_that_throws_loses_the_line_not_the_caller()
    {
        var writer = new FailingWriter();
        var trace = new SessionTrace(writer, json: true);
        var header = new MessageHeader((uint)FrontendRequest.SetOwner, MessageHeader.Version, 0);

        trace.Record(TraceDirection.FrontendToBackend, 1, header, [], []);
        trace.Event(1, "backend closed");
        writer.Fail = false;
        trace.Event(1, "frontend closed");

        trace.DroppedLines.Should().Be(2);
        trace.WrittenLines.Should().Be(1);
        JsonDocument.Parse(writer.Written.ToString().Trim()).RootElement.GetProperty("event").GetString().Should().Be("frontend closed");
    }

    [Fact]
    public void Concurrent_sessions_never_interleave_lines()
    {
        var writer = new StringWriter();
        var trace = new SessionTrace(writer, json: true);
        var payload = new VringAddressPayload(0, 0, 1, 2, 3, 4).Encode();
        var header = new MessageHeader((uint)FrontendRequest.SetVringAddr, MessageHeader.Version, (uint)payload.Length);

        Parallel.For(0, 4, s =>
        {
            for (int i = 0; i < 200; i++)
            {
                trace.Record(TraceDirection.FrontendToBackend, (uint)s, header, payload, []);
            }
        });

        var lines = writer.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        lines.Should().HaveCount(800);
        foreach (string line in lines)
        {
            JsonDocument.Parse(line).RootElement.GetProperty("fields").GetProperty("used").GetString().Should().Be("0x2");
        }

        lines.Select(l => JsonDocument.Parse(l).RootElement.GetProperty("seq").GetInt64()).Max().Should().Be(200);
    }

    private sealed class FailingWriter : TextWriter
    {
        public bool Fail { get; set; } = true;

        public System.Text.StringBuilder Written { get; } = new();

        public override System.Text.Encoding Encoding => System.Text.Encoding.UTF8;

        public override void Write(char value) => Write(value.ToString());

        public override void Write(string? value)
        {
            if (Fail)
            {
                throw new IOException("broken pipe");
            }

            Written.Append(value);
        }
    }
}
