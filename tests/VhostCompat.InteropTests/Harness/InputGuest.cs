using System.Buffers.Binary;
using System.Text.RegularExpressions;

namespace VhostCompat.InteropTests.Harness;

/// <summary>Builds (once, cached) the virtio-input guest initramfs with scripts/build-initramfs-input.sh.</summary>
public static class InputInitramfs
{
    private static readonly SemaphoreSlim Gate = new(1, 1);

    public static Task<string> GetAsync(InteropTools tools) => InitramfsBuild.GetAsync(tools, Gate, "initramfs-input", "virtio-input guest initramfs");
}

/// <summary>One struct input_event the guest read from the evdev node (x86-64 layout: 16 bytes of time first).</summary>
public readonly record struct GuestInputEvent(ushort Type, ushort Code, int Value)
{
    public static GuestInputEvent Parse(string hex)
    {
        byte[] b = Convert.FromHexString(hex);
        return new GuestInputEvent(BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan(16)), BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan(18)), BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(20)));
    }
}

/// <summary>
/// QEMU (-device vhost-user-input-pci) booting the Debian kernel with the virtio-input busybox initramfs: the guest
/// opens the keyboard's evdev node, turns Num Lock on through it and prints every event it reads until Enter is
/// released. Console, stdout, stderr and QMP live in the run directory; the process is bounded and killed by PID.
/// </summary>
public sealed class InputQemuGuest : QemuGuestBase
{
    public static readonly Regex StatusLine = new(@"VHOSTCOMPAT: status=0x(?<status>[0-9a-fA-F]+) device=(?<device>0x[0-9a-fA-F]+)", RegexOptions.CultureInvariant);
    public static readonly Regex StatusOrNoDevice = new(@"VHOSTCOMPAT: (status=0x[0-9a-fA-F]+|no-inputdev.*)", RegexOptions.CultureInvariant);
    public static readonly Regex LedLine = new(@"VHOSTCOMPAT: led numlock written=(?<result>\S+)", RegexOptions.CultureInvariant);
    public static readonly Regex EventLine = new(@"VHOSTCOMPAT: event hex=(?<hex>[0-9a-f]{48})$", RegexOptions.CultureInvariant);
    public static readonly Regex DoneLine = new(@"VHOSTCOMPAT: done uptime=", RegexOptions.CultureInvariant);

    private InputQemuGuest(ExternalProcess process, string consolePath, string qmpPath)
        : base(process, consolePath, qmpPath)
    {
    }

    /// <summary>True when this QEMU knows vhost-user-input-pci (<c>-device vhost-user-input-pci,help</c>; see RngQemuGuest.HasDeviceAsync).</summary>
    public static async Task<bool> HasDeviceAsync(InteropRun run, InteropTools tools)
    {
        var helpOptions = new ExternalProcessOptions(
            "qemu-device-help", tools.Qemu, [.. tools.QemuPeer?.DataDirArguments() ?? [], "-nodefaults", "-machine", "none", "-device", "vhost-user-input-pci,help"], run.Directory, TimeSpan.FromSeconds(30));
        tools.QemuPeer?.ApplyEnvironment(helpOptions.Environment);
        await using var p = ExternalProcess.Start(helpOptions);
        await p.WaitForExitAsync(TimeSpan.FromSeconds(30)).ConfigureAwait(false);
        return (p.ReadStdout() + p.ReadStderr()).Contains("vhost-user-input-pci options:", StringComparison.Ordinal);
    }

    public static async Task<InputQemuGuest> StartAsync(InteropRun run, InteropTools tools, string socketPath, string deviceProperties = "", string name = "qemu")
    {
        ArgumentNullException.ThrowIfNull(run);
        ArgumentNullException.ThrowIfNull(tools);
        var initrd = await InputInitramfs.GetAsync(tools).ConfigureAwait(false);
        string accel = Environment.GetEnvironmentVariable("VHOSTCOMPAT_QEMU_ACCEL") is { Length: > 0 } a ? a : "tcg";
        var (process, console, qmp) = StartQemu(run, tools, new Launch(name, accel, 1, 256, TimeSpan.FromMinutes(5), initrd, "console=ttyS0 panic=-1 quiet")
        {
            DeviceArguments =
            [
                "-chardev", "socket,id=c0,path=" + socketPath,
                "-device", "vhost-user-input-pci,chardev=c0,id=input0" + (deviceProperties.Length > 0 ? "," + deviceProperties : string.Empty),
            ],
            StdoutArtifact = true,
        });
        return new InputQemuGuest(process, console, qmp);
    }

    /// <summary>Every event the guest printed so far, in order.</summary>
    public IReadOnlyList<GuestInputEvent> Events() =>
        LogFile.ReadLines(ConsolePath).Select(l => EventLine.Match(l)).Where(m => m.Success).Select(m => GuestInputEvent.Parse(m.Groups["hex"].Value)).ToList();

    /// <summary>Console lines printed by the guest's /init (prefix "VHOSTCOMPAT: ").</summary>
    public IReadOnlyList<string> GuestLines() =>
        LogFile.ReadLines(ConsolePath).Where(l => l.Contains("VHOSTCOMPAT: ", StringComparison.Ordinal)).ToList();
}

/// <summary>samples/Input run as <c>dotnet VhostCompat.Samples.Input.dll --socket-path SOCK --log-level Debug ...</c>: it listens, QEMU connects.</summary>
public sealed class InputSampleBackend : IAsyncDisposable
{
    private InputSampleBackend(ExternalProcess process) => Process = process;

    public ExternalProcess Process { get; }

    public string LogPath => Process.StdoutPath;

    public static string DllPath => RepositoryLayout.SampleDll("Input", "VhostCompat.Samples.Input");

    public static Task<BackendCapabilities> GetCapabilitiesAsync(InteropRun run) => SampleProcess.GetCapabilitiesAsync(run, "input-capabilities", DllPath);

    public static async Task<InputSampleBackend> StartAsync(InteropRun run, string socketPath, IEnumerable<string> arguments)
    {
        ArgumentNullException.ThrowIfNull(run);
        File.Delete(socketPath);
        var process = SampleProcess.Start(run, "input-backend", [DllPath, "--socket-path", socketPath, "--log-level", "Debug", .. arguments], null, "input backend");
        var backend = new InputSampleBackend(process);
        await SampleProcess.WaitUntilListeningAsync(run, process, backend, socketPath, "input backend").ConfigureAwait(false);
        return backend;
    }

    public string RequestSequence() => SampleNetBackend.Collapse(SampleProcess.Requests(LogPath));

    public Task StopAsync() => Process.StopAsync(TimeSpan.FromSeconds(10));

    public ValueTask DisposeAsync() => Process.DisposeAsync();
}
