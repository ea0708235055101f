using System.Net.Sockets;
using VhostCompat.Compat;
using VhostCompat.Frontend;
using VhostCompat.Hosting;
using VhostCompat.IntegrationTests.Support;
using VhostCompat.Protocol;

namespace VhostCompat.IntegrationTests;

/// <summary>
/// <see cref="VhostUserBackendProgram"/> run in-process (writers captured, a token instead of SIGTERM): every bad
/// command line is one line on stderr and exit code 2, never a stack trace; --print-capabilities prints a valid
/// document; a stop ends the serving with exit code 0 after the program's OnStopped.
/// </summary>
public sealed class BackendProgramTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vhostcompat-prog-").FullName;

    public void Dispose()
    {
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private sealed record Result(int ExitCode, string Stdout, string Stderr, bool Stopped);

    /// <summary>A program with one device option (--queues 1..8) and a cross-option check (--forbidden).</summary>
    private static async Task<Result> RunAsync(string[] args, Action<BackendProgramContext>? serving = null, CancellationToken stop = default)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        bool stopped = false;
        int code = await VhostUserBackendProgram.RunAsync(args, program =>
        {
            program.ProgramName = "test-backend";
            var queues = program.AddNumber("--queues", "virtqueues", 2, 1, 8);
            var forbidden = program.AddOption(new System.CommandLine.Option<bool>("--forbidden"));
            program.Validate(c => c.GetValue(forbidden) ? "--forbidden is forbidden" : null);
            program.UseDevice((c, _) => new TestDevice(queues: c.GetValue(queues)));
            program.OnStarting(c => serving?.Invoke(c));
            program.OnStopped(_ => stopped = true);
        }, output, error, handleSignals: false, stop);
        return new Result(code, output.ToString(), error.ToString(), stopped);
    }

    private static void ShouldBeOneUsageLine(Result r, string expected)
    {
        r.ExitCode.Should().Be(VhostUserBackendProgram.ExitUsage);
        r.Stderr.Should().Be(expected + Environment.NewLine, "one line on stderr");
        r.Stderr.Should().NotContain("   at ");
        r.Stdout.Should().Be("run 'test-backend --help' for usage" + Environment.NewLine);
    }

    [Theory]
    [InlineData(new[] { "--socket-path", "/tmp/x.sock", "--queues", "abc" }, "--queues: The input string 'abc' was not in a correct format.")]
    [InlineData(new[] { "--socket-path", "/tmp/x.sock", "--queues", "99999999999" }, "--queues: Value was either too large or too small for an Int32.")]
    [InlineData(new[] { "--socket-path", "/tmp/x.sock", "--queues", "9" }, "--queues must be 1..8")]
    [InlineData(new[] { "--socket-path", "/tmp/x.sock", "--queues=0" }, "--queues must be 1..8")]
    [InlineData(new[] { "--socket-path" }, "Required argument missing for option: '--socket-path'.")]
    [InlineData(new[] { "--socket-path", "/tmp/x.sock", "--compat-profile" }, "Required argument missing for option: '--compat-profile'.")]
    [InlineData(new[] { "--socket-path", "/tmp/x.sock", "--bogus" }, "Unrecognized command or argument '--bogus'.")]
    [InlineData(new[] { "--socket-path", "/tmp/a.sock", "--socket-path", "/tmp/b.sock" }, "Option '--socket-path' expects a single argument but 2 were provided.")]
    [InlineData(new[] { "--fd", "-1" }, "--fd: '-1' is not a file descriptor number")]
    [InlineData(new[] { "--fd", "x" }, "--fd: 'x' is not a file descriptor number")]
    [InlineData(new[] { "--fd", "3", "--socket-path", "/tmp/x.sock" }, "--socket-path and --fd cannot be combined")]
    [InlineData(new[] { "--fd", "3", "--client" }, "--client needs --socket-path (an inherited --fd is already connected or listening)")]
    [InlineData(new string[0], "--socket-path or --fd is required")]
    [InlineData(new[] { "--socket-path", "/tmp/x.sock", "--log-level", "loud" }, "--log-level: Requested value 'loud' was not found.")]
    [InlineData(new[] { "--socket-path", "/tmp/x.sock", "--log-level", "42" }, "--log-level: '42' is not a level (Trace, Debug, Information, Warning, Error, Critical, None)")]
    [InlineData(new[] { "--socket-path", "/tmp/x.sock", "--forbidden" }, "--forbidden is forbidden")]
    [InlineData(new[] { "--socket-path", "/missing/dir/x.sock" }, "--socket-path /missing/dir/x.sock: directory /missing/dir does not exist")]
    public async Task A_bad_command_line_is_one_line_and_exit_code_2(string[] args, string line) =>
        ShouldBeOneUsageLine(await RunAsync(args), line);

    [Fact]
    public async Task A_socket_path_too_long_for_a_unix_address_is_a_usage_error()
    {
        string path = "/tmp/" + new string('s', 120) + ".sock";
        ShouldBeOneUsageLine(await RunAsync(["--socket-path", path]), $"--socket-path {path}: longer than the 107 bytes a Unix socket address holds");
    }

    [Fact]
    public async Task A_socket_path_that_is_a_directory_is_a_usage_error() =>
        ShouldBeOneUsageLine(await RunAsync(["--socket-path", _dir]), $"--socket-path {_dir}: is a directory");

    [Fact]
    public async Task A_state_directory_that_cannot_be_written_is_a_usage_error()
    {
        string file = Path.Combine(_dir, "a-file");
        await File.WriteAllTextAsync(file, "x");
        var r = await RunAsync(["--socket-path", Path.Combine(_dir, "be.sock"), "--state-dir", Path.Combine(file, "state")]);
        r.ExitCode.Should().Be(VhostUserBackendProgram.ExitUsage);
        r.Stderr.Should().StartWith($"--state-dir {Path.Combine(file, "state")}: not writable: ");
        r.Stderr.TrimEnd().Should().NotContain("\n");
        File.Exists(Path.Combine(_dir, "be.sock")).Should().BeFalse("nothing listened");
    }

    [Fact]
    public async Task An_unknown_compat_profile_is_one_line_and_exit_code_3()
    {
        var r = await RunAsync(["--socket-path", Path.Combine(_dir, "be.sock"), "--compat-profile", "mrg_rxbuf=maybe"]);
        r.ExitCode.Should().Be(VhostUserBackendProgram.ExitIncompatible);
        r.Stderr.Should().Contain("mrg_rxbuf").And.NotContain("   at ");
        r.Stderr.TrimEnd().Should().NotContain("\n");
        r.Stopped.Should().BeFalse();
    }

    [Fact]
    public async Task Print_capabilities_prints_a_valid_document_and_exits_0()
    {
        var r = await RunAsync(["--print-capabilities", "--queues", "4"]);
        r.ExitCode.Should().Be(VhostUserBackendProgram.ExitOk, r.Stderr);
        r.Stderr.Should().BeEmpty();
        BackendCapabilities caps = CapabilityDocument.Parse(System.Text.Encoding.UTF8.GetBytes(r.Stdout), "stdout");
        caps.Queues.Should().Be(4, "the document describes the device built from the options");
        r.Stopped.Should().BeFalse("nothing was served");
    }

    [Fact]
    public async Task Help_prints_the_usage_with_the_device_options_and_exits_0()
    {
        var r = await RunAsync(["--help"]);
        r.ExitCode.Should().Be(0);
        r.Stdout.Should().Contain("--socket-path").And.Contain("--print-capabilities").And.Contain("--queues").And.Contain("--state-dir");
    }

    [Fact]
    public async Task A_stop_ends_serving_with_exit_code_0_and_runs_OnStopped()
    {
        string socket = Path.Combine(_dir, "be.sock");
        using var stop = new CancellationTokenSource();
        var run = RunAsync(["--socket-path", socket, "--state-dir", Path.Combine(_dir, "state")], stop: stop.Token);
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (!File.Exists(socket))
        {
            if (run.IsCompleted)
            {
                Assert.Fail("the program ended before listening: " + (await run).Stderr);
            }

            DateTime.UtcNow.Should().BeBefore(deadline);
            await Task.Delay(20);
        }

        await using (var fe = await VhostUserFrontend.ConnectAsync(socket))
        {
            (await fe.GetFeaturesAsync() & VhostCompat.Virtio.VirtioFeatureBits.Version1).Should().NotBe(0ul, "the device is served");
        }

        await stop.CancelAsync();
        var r = await run.WaitAsync(TimeSpan.FromSeconds(10));
        r.ExitCode.Should().Be(VhostUserBackendProgram.ExitOk, r.Stderr);
        r.Stopped.Should().BeTrue();
        r.Stderr.Should().BeEmpty();
        File.Exists(socket).Should().BeFalse("the socket file is removed on stop");
    }

    [Fact]
    public async Task A_socket_served_by_another_live_process_is_one_line_and_exit_code_1()
    {
        string socket = Path.Combine(_dir, "taken.sock");
        using var other = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        other.Bind(new UnixDomainSocketEndPoint(socket));
        other.Listen(1);
        var r = await RunAsync(["--socket-path", socket]).WaitAsync(TimeSpan.FromSeconds(10));
        r.ExitCode.Should().Be(VhostUserBackendProgram.ExitFailure);
        r.Stderr.Should().Be($"{socket} is served by another live process" + Environment.NewLine);
        r.Stopped.Should().BeFalse();
    }

    [Fact]
    public async Task An_exception_from_the_program_s_own_code_is_one_line_and_exit_code_1()
    {
        var r = await RunAsync(["--socket-path", Path.Combine(_dir, "be.sock")], serving: _ => throw new InvalidOperationException("device bug"));
        r.ExitCode.Should().Be(VhostUserBackendProgram.ExitFailure);
        r.Stderr.Should().Be("InvalidOperationException: device bug" + Environment.NewLine);
    }
}
