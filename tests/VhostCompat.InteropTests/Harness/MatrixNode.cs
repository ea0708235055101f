using System.Globalization;
using VhostCompat.Compat;

namespace VhostCompat.InteropTests.Harness;

/// <summary>Where a matrix VM runs: which QEMU build (its <see cref="InteropTools"/>) and which machine type.</summary>
/// <param name="Tools">Tools with the QEMU build of this frontend (<see cref="InteropTools.QemuPeer"/>).</param>
/// <param name="Machine">The -machine type, e.g. "q35" or "pc-q35-7.2".</param>
public sealed record MatrixFrontend(InteropTools Tools, string Machine)
{
    /// <summary>"QEMU 10.0" (the peer's name), or "QEMU" for the binary in PATH.</summary>
    public string Name => Tools.QemuPeer?.Name ?? "QEMU";

    /// <summary>"QEMU 10.0 pc-q35-7.2".</summary>
    public string Label => $"{Name} {Machine}";
}

/// <summary>QEMU exited before it created its QMP socket (e.g. "unsupported machine type").</summary>
public sealed class QemuStartFailedException(string message, IReadOnlyList<string> stderr) : Exception(message)
{
    /// <summary>Every line QEMU wrote to stderr.</summary>
    public IReadOnlyList<string> Stderr { get; } = stderr;
}

/// <summary>
/// One place a matrix VM can be: a samples/Net backend (its release and pin, <c>--state-dir</c>, the responder) and
/// the QEMU that uses it, booting the pinging guest or waiting on <c>-incoming</c>.
/// </summary>
public sealed class MatrixNode : IAsyncDisposable
{
    /// <summary>Every backend answers pings to this address (<c>samples/Net --responder</c>).</summary>
    public const string ResponderIp = "10.0.0.1";

    private bool _disposed;

    private MatrixNode(string name, MatrixBackend spec, MatrixFrontend frontend, SampleNetBackend backend, QemuGuest qemu, AckedStateStore store, string socket)
    {
        Name = name;
        Spec = spec;
        Frontend = frontend;
        Backend = backend;
        Qemu = qemu;
        Store = store;
        Key = AckedStateStore.DefaultKey(socket);
    }

    public string Name { get; }

    public MatrixBackend Spec { get; }

    public MatrixFrontend Frontend { get; }

    public SampleNetBackend Backend { get; }

    public QemuGuest Qemu { get; }

    public AckedStateStore Store { get; }

    public string Key { get; }

    public string RecordPath => Store.PathFor(Key);

    /// <summary>
    /// Starts the backend, then QEMU. Throws <see cref="QemuStartFailedException"/> when QEMU exits before its QMP
    /// socket appears (the backend is stopped then).
    /// </summary>
    public static async Task<MatrixNode> StartAsync(InteropRun run, MatrixFrontend frontend, MatrixBackend spec, string name, int? incomingPort, string backendLogLevel = "Information")
    {
        ArgumentNullException.ThrowIfNull(run);
        ArgumentNullException.ThrowIfNull(frontend);
        ArgumentNullException.ThrowIfNull(spec);
        var sock = run.PathFor(name + ".sock");
        var store = new AckedStateStore(run.PathFor("state-" + name));
        var backend = await SampleNetBackend.StartAsync(run, sock,
            [.. spec.Options, "--state-dir", store.Directory, "--responder", ResponderIp, "--log-level", backendLogLevel], name + "-backend",
            TimeSpan.FromMinutes(10)).ConfigureAwait(false);
        try
        {
            // vectors=0 on every node (QemuGuest's default): MSI-X state is in the migration stream, so both ends must agree,
            // and QEMU 7.2 under TCG crashes with MSI-X + vhost-user.
            var o = new QemuGuestOptions { SocketPath = sock, Timeout = TimeSpan.FromMinutes(10), Machine = frontend.Machine };
            o.GuestParameters["mode"] = "loop";
            o.GuestParameters["pingloop"] = "1";
            o.GuestParameters["peer"] = ResponderIp;
            if (incomingPort is { } p)
            {
                o.ExtraArguments.Add("-incoming");
                o.ExtraArguments.Add($"tcp:127.0.0.1:{p.ToString(CultureInfo.InvariantCulture)}");
            }

            var qemu = await QemuGuest.StartAsync(run, frontend.Tools, o, name).ConfigureAwait(false);
            var node = new MatrixNode(name, spec, frontend, backend, qemu, store, sock);
            if (!await LogFile.WaitForPathAsync(qemu.QmpPath, TimeSpan.FromSeconds(60), qemu.Process).ConfigureAwait(false))
            {
                var exited = qemu.Process.HasExited;
                await qemu.Process.WaitForExitAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
                var stderr = LogFile.ReadLines(qemu.StderrPath);
                await node.DisposeAsync().ConfigureAwait(false);
                throw new QemuStartFailedException(
                    $"{frontend.Label} ({name}) {(exited ? "exited" : "is running")} without creating its QMP socket {qemu.QmpPath} within 60 s: {string.Join(" | ", stderr)}",
                    stderr);
            }

            return node;
        }
        catch
        {
            await backend.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Waits for the acked-state record of this node's backend (written at DRIVER_OK) and loads it.</summary>
    public async Task<AckedStateRecord> WaitForRecordAsync(InteropRun run)
    {
        ArgumentNullException.ThrowIfNull(run);
        if (!await LogFile.WaitForPathAsync(RecordPath, TimeSpan.FromSeconds(20), Backend.Process).ConfigureAwait(false))
        {
            Assert.Fail($"{Name} ({Spec.Label}) wrote no acked-state record {RecordPath}{run.Diagnostics()}");
        }

        return Store.Load(Key)!;
    }

    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        await Qemu.DisposeAsync().ConfigureAwait(false);
        await Backend.StopAsync().ConfigureAwait(false);
        await Backend.DisposeAsync().ConfigureAwait(false);
    }
}
