using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using VhostCompat.Tests.Support;

namespace VhostCompat.Tests.Compat;

/// <summary>
/// <c>vhost-compat frontend --qmp</c> against monitors that lie, flood, hang up or stay silent: always exit 2 with one
/// line naming the socket, never a stack trace or a hang, and never more than one bounded QMP line in memory.
/// </summary>
public sealed class HostileQmpTests : IDisposable
{
    private static readonly TimeSpan Quick = TimeSpan.FromSeconds(15);

    private readonly TempDir _tmp = new("vhc-hqmp");

    public void Dispose() => _tmp.Dispose();

    private static Func<FakeQmpServer.QmpPeer, CancellationToken, Task> Script(string name)
    {
        var capture = QemuCapture.Qemu72();
        string greeting = capture["greeting"]!.ToJsonString();
        return name switch
        {
            "garbage" => (p, ct) => p.SendAsync("Welcome to QEMU!", ct),
            "array" => (p, ct) => p.SendAsync("[1, 2, 3]", ct),
            "no-greeting" => (p, ct) => p.SendAsync("""{"return": {}}""", ct),
            "hangs-up-at-once" => (_, _) => Task.CompletedTask,
            "hangs-up-mid-way" => async (p, ct) =>
            {
                await p.SendAsync(greeting, ct);
                await p.ReadCommandAsync(ct);
                await p.SendAsync("""{"return": {}}""", ct);
                await p.ReadCommandAsync(ct);
            },
            "huge-line" => async (p, ct) =>
            {
                // 64 MiB without a newline, then silence: a client that buffers whole lines waits for the timeout.
                await p.SendAsync(greeting, ct);
                await p.ReadCommandAsync(ct);
                byte[] chunk = Encoding.ASCII.GetBytes(new string('x', 1 << 16));
                for (int i = 0; i < 1024; i++)
                {
                    await p.SendRawAsync(chunk, ct);
                }

                await p.SilenceAsync(ct);
            },
            "deep-nesting" => (p, ct) => p.SendAsync(new string('[', 100_000) + new string(']', 100_000), ct),
            "event-flood" => async (p, ct) =>
            {
                await p.SendAsync(greeting, ct);
                while (true)
                {
                    await p.SendAsync("""{"event": "RTC_CHANGE", "data": {"offset": 0}, "timestamp": {"seconds": 1, "microseconds": 2}}""", ct);
                }
            },
            "silent" => (p, ct) => p.SilenceAsync(ct),
            "silent-after-greeting" => async (p, ct) =>
            {
                await p.SendAsync(greeting, ct);
                await p.SilenceAsync(ct);
            },
            "error" => FakeQmpServer.AnswersWith(capture, "query-machines", """{"error": {"class": "GenericError", "desc": "boom"}}"""),
            "error-two-lines" => FakeQmpServer.AnswersWith(capture, "query-machines", """{"error": {"class": "GenericError", "desc": "boom\nsecond line"}}"""),
            "error-desc-number" => FakeQmpServer.AnswersWith(capture, "query-version", """{"error": {"desc": 5}}"""),
            "no-return" => FakeQmpServer.AnswersWith(capture, "query-version", """{"id": 1}"""),
            "version-empty" => FakeQmpServer.AnswersWith(capture, "query-version", """{"return": {}}"""),
            "version-strings" => FakeQmpServer.AnswersWith(capture, "query-version", """{"return": {"qemu": {"major": "10", "minor": 0, "micro": 2}}}"""),
            "version-huge" => FakeQmpServer.AnswersWith(capture, "query-version", """{"return": {"qemu": {"major": 1e30, "minor": 0, "micro": 2}}}"""),
            "machines-number" => FakeQmpServer.AnswersWith(capture, "query-machines", """{"return": 5}"""),
            "machine-without-name" => FakeQmpServer.AnswersWith(capture, "query-machines", """{"return": [{"alias": "q35"}]}"""),
            "machine-name-two-lines" => FakeQmpServer.AnswersWith(capture, "query-machines", """{"return": [{"name": "pc\nsecond line"}]}"""),
            "machine-name-latin-1" => FakeQmpServer.AnswersWith(capture, "query-machines", """{"return": [{"name": "pc-q35-7.2ÿ"}]}"""),
            "machine-name-invalid-utf8" => FakeQmpServer.AnswersWith(capture, "query-machines", [.. "{\"return\": [{\"name\": \"pc"u8, 0xff, .. "\"}]}\n"u8]),
            "too-many-machines" => FakeQmpServer.AnswersWith(capture, "query-machines", new JsonObject
            {
                ["return"] = new JsonArray([.. Enumerable.Range(0, 600).Select(i => (JsonNode?)new JsonObject { ["name"] = $"m{i}" })]),
            }.ToJsonString()),
            "qom-get-number" => FakeQmpServer.AnswersWith(capture, "qom-get", """{"return": 7}"""),
            _ => throw new ArgumentOutOfRangeException(nameof(name)),
        };
    }

    [Theory]
    [InlineData("garbage", "not QMP")]
    [InlineData("array", "not an object")]
    [InlineData("no-greeting", "no greeting")]
    [InlineData("hangs-up-at-once", "closed the connection")]
    [InlineData("hangs-up-mid-way", "closed the connection")]
    [InlineData("huge-line", "longer than")]
    [InlineData("deep-nesting", "not QMP")]
    [InlineData("error", "QMP query-machines: boom")]
    [InlineData("error-two-lines", "QMP query-machines: boom")]
    [InlineData("error-desc-number", "QMP query-version")]
    [InlineData("no-return", "without 'return'")]
    [InlineData("version-empty", "unexpected QMP answer")]
    [InlineData("version-strings", "unexpected QMP answer")]
    [InlineData("version-huge", "unexpected QMP answer")]
    [InlineData("machines-number", "unexpected QMP answer")]
    [InlineData("machine-without-name", "unexpected QMP answer")]
    [InlineData("machine-name-two-lines", "unexpected QMP answer")]
    [InlineData("machine-name-latin-1", "unexpected QMP answer")]
    [InlineData("machine-name-invalid-utf8", "unexpected QMP answer")]
    [InlineData("too-many-machines", "more than 512")]
    [InlineData("qom-get-number", "unexpected QMP answer")]
    public async Task A_lying_monitor_is_one_line_and_quick(string name, string fragment)
    {
        string socket = _tmp.Combine("vm.qmp");
        await using var qemu = new FakeQmpServer(socket, Script(name));
        var clock = Stopwatch.StartNew();
        var run = await CliTests.Run("frontend", "--qmp", socket, "--timeout", "60");
        clock.Elapsed.Should().BeLessThan(Quick, "the client must not wait for the timeout");
        FrontendCliTests.ShouldFailOnOneLine(run, fragment);
        run.Err.Should().Contain(socket);
    }

    [Theory]
    [InlineData("silent")]
    [InlineData("silent-after-greeting")]
    [InlineData("event-flood")]
    public async Task A_monitor_that_never_answers_times_out(string name)
    {
        string socket = _tmp.Combine("vm.qmp");
        await using var qemu = new FakeQmpServer(socket, Script(name));
        var clock = Stopwatch.StartNew();
        var run = await CliTests.Run("frontend", "--qmp", socket, "--timeout", "0.5");
        clock.Elapsed.Should().BeLessThan(Quick);
        FrontendCliTests.ShouldFailOnOneLine(run, "no QMP answer within 0.5 s");
    }
}
