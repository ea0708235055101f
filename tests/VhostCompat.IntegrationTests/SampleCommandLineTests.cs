using System.Diagnostics;
using System.Globalization;
using VhostCompat.Compat;
using VhostCompat.IntegrationTests.Support;

namespace VhostCompat.IntegrationTests;

/// <summary>
/// The three samples run as processes with the bad inputs of issue 12 (each used to end in an unhandled exception
/// and a stack trace), --print-capabilities, and SIGTERM: all through the same runner.
/// </summary>
public sealed class SampleCommandLineTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vhostcompat-cli-").FullName;

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

    private static async Task<(int Code, string Stdout, string Stderr)> RunToExitAsync(string sample, params string[] args)
    {
        using Process p = SampleLauncher.Start(sample, args);
        Task<string> stdout = p.StandardOutput.ReadToEndAsync();
        Task<string> stderr = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await p.WaitForExitAsync(cts.Token);
        return (p.ExitCode, await stdout, await stderr);
    }

    [Theory]
    [InlineData("Block", new[] { "--queues", "abc" }, "--queues: The input string 'abc' was not in a correct format.")]
    [InlineData("Net", new[] { "--socket-path" }, "Required argument missing for option: '--socket-path'.")]
    [InlineData("Net", new[] { "--socket-path", "/missing/dir/x.sock" }, "--socket-path /missing/dir/x.sock: directory /missing/dir does not exist")]
    [InlineData("Block", new[] { "--socket-path", "/missing/dir/x.sock", "--image", "/missing/dir/x.img" }, "/missing/dir/x.img does not exist; give --size to create it")]
    [InlineData("Block", new[] { "--socket-path", "/missing/dir/x.sock", "--image", "/tmp/x.img", "--size", "1000" }, "--size must be a multiple of 512")]
    [InlineData("Block", new[] { "--socket-path", "/missing/dir/x.sock", "--image", "/tmp/x.img", "--size", "1048576" }, "--socket-path /missing/dir/x.sock: directory /missing/dir does not exist")]
    [InlineData("Rng", new[] { "--socket-path", "/missing/dir/x.sock" }, "--socket-path /missing/dir/x.sock: directory /missing/dir does not exist")]
    [InlineData("Rng", new[] { "--fd", "abc" }, "--fd: 'abc' is not a file descriptor number")]
    [InlineData("Net", new[] { "--socket-path", "/tmp/x.sock", "--queue-pairs", "200" }, "--queue-pairs must be 1..127")]
    [InlineData("Input", new[] { "--socket-path", "/tmp/x.sock", "--text", "caf\u00e9" }, "--text: the US layout has no key for '\u00e9'")]
    [InlineData("Input", new[] { "--socket-path", "/tmp/x.sock", "--start", "soon" }, "Argument 'soon' not recognized. Must be one of:; 'enable'; 'led'")]
    [InlineData("Net", new[] { "--socket-path", "/tmp/x.sock", "--frobnicate" }, "Unrecognized command or argument '--frobnicate'.")]
    public async Task A_bad_command_line_gives_one_line_exit_code_2_and_no_stack_trace(string sample, string[] args, string line)
    {
        var (code, stdout, stderr) = await RunToExitAsync(sample, args);
        code.Should().Be(2, stderr);
        stderr.Should().Be(line + Environment.NewLine);
        stdout.Should().Be($"run 'VhostCompat.Samples.{sample} --help' for usage" + Environment.NewLine);
    }

    [Fact]
    public async Task An_unknown_compat_profile_id_is_refused_with_one_line_and_exit_code_3()
    {
        var (code, _, stderr) = await RunToExitAsync("Net", "--socket-path", Path.Combine(_dir, "n.sock"), "--compat-profile", "org.vhostcompat.net.v9");
        code.Should().Be(3);
        stderr.Should().Contain("org.vhostcompat.net.v9").And.NotContain("   at ");
        stderr.TrimEnd().Should().NotContain("\n");
    }

    [Theory]
    [InlineData("Net", "net")]
    [InlineData("Block", "block")]
    [InlineData("Rng", "rng")]
    [InlineData("Input", "input")]
    public async Task Print_capabilities_prints_a_valid_document_and_exits_0(string sample, string type)
    {
        var (code, stdout, stderr) = await RunToExitAsync(sample, "--print-capabilities");
        code.Should().Be(0, stderr);
        stderr.Should().BeEmpty();
        BackendCapabilities caps = CapabilityDocument.Parse(System.Text.Encoding.UTF8.GetBytes(stdout), "stdout");
        CapabilityDocument.TypeName(caps.DeviceType).Should().Be(type);
    }

    [Theory]
    [InlineData("Rng")]
    [InlineData("Block")]
    [InlineData("Net")]
    [InlineData("Input")]
    public async Task SIGTERM_stops_the_sample_gracefully_with_exit_code_0(string sample)
    {
        string socket = Path.Combine(_dir, sample + ".sock");
        string[] args = sample == "Block"
            ? ["--socket-path", socket, "--image", Path.Combine(_dir, "disk.img"), "--size", "1048576"]
            : ["--socket-path", socket];
        using Process p = SampleLauncher.Start(sample, args);
        Task<string> stdout = p.StandardOutput.ReadToEndAsync();
        await SampleLauncher.WaitForSocketAsync(p, socket, TimeSpan.FromSeconds(30));
        using (var kill = Process.Start("kill", ["-TERM", p.Id.ToString(CultureInfo.InvariantCulture)]))
        {
            await kill.WaitForExitAsync();
        }

        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        await p.WaitForExitAsync(cts.Token);
        p.ExitCode.Should().Be(0);
        string log = await stdout;
        log.Should().Contain("Stopping on SIGTERM").And.Contain("stopped");
        File.Exists(socket).Should().BeFalse("the socket file is removed on a graceful stop");
    }
}
