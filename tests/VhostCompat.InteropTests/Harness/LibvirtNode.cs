using System.Globalization;
using System.Text.RegularExpressions;

namespace VhostCompat.InteropTests.Harness;

/// <summary>What one virsh run produced.</summary>
public sealed record VirshResult(int? ExitCode, string Stdout, string Stderr, TimeSpan Elapsed)
{
    public bool Ok => ExitCode == 0;

    public override string ToString() =>
        $"exit {ExitCode?.ToString(CultureInfo.InvariantCulture) ?? "(timed out)"} after {Elapsed.TotalSeconds:F1} s\n--- stdout ---\n{Stdout}\n--- stderr ---\n{Stderr}";
}

/// <summary>
/// One libvirt "host": Debian 12's libvirtd run by scripts/libvirtd-node.sh in its own mount namespace, with private
/// /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt under <see cref="Root"/> and
/// its own host_uuid, so two nodes on one machine are two hosts to libvirt (a live migration between them is real) and
/// neither touches a system libvirtd. QEMU runs as root here (qemu.conf user/group) and no security driver is used.
/// The VhostCompat hook is installed as <c>hooks/qemu.d/50-vhostcompat</c> before the daemon starts (libvirtd looks
/// for hook scripts at start-up); every run of it is logged to <see cref="HookLogPath"/>.
/// </summary>
public sealed class LibvirtNode : IAsyncDisposable
{
    private readonly InteropRun _run;
    private readonly List<string> _domains = [];

    private LibvirtNode(InteropRun run, string name, string root, ExternalProcess daemon)
    {
        _run = run;
        Name = name;
        Root = root;
        Daemon = daemon;
    }

    public string Name { get; }

    public string Root { get; }

    public ExternalProcess Daemon { get; }

    /// <summary>The connection URI virsh (and a migration source) uses for this node.</summary>
    public string Uri => $"qemu+unix:///system?socket={Root}/run/libvirt-sock";

    public string HookLogPath => Path.Combine(Root, "hook.log");

    public static string? Missing()
    {
        foreach (var tool in new[] { "/usr/sbin/libvirtd", "/usr/bin/virsh", "/usr/bin/unshare" })
        {
            if (!File.Exists(tool))
            {
                return $"{tool} not found (apt-get install libvirt-daemon-system libvirt-clients)";
            }
        }

        return null;
    }

    /// <summary>Writes the node's configuration and hook, starts libvirtd and waits until virsh can talk to it.</summary>
    /// <param name="hookArguments">Options for <c>vhost-compat libvirt hook</c> in the installed qemu.d script.</param>
    public static async Task<LibvirtNode> StartAsync(InteropRun run, string name, int hostNumber, IEnumerable<string> hookArguments)
    {
        ArgumentNullException.ThrowIfNull(run);
        var root = run.PathFor("lv-" + name);
        var etc = Path.Combine(root, "etc");
        Directory.CreateDirectory(Path.Combine(etc, "hooks", "qemu.d"));
        Directory.CreateDirectory(Path.Combine(etc, "qemu"));
        await File.WriteAllTextAsync(Path.Combine(etc, "libvirtd.conf"), string.Join('\n',
            $"host_uuid = \"6a1f0e6c-5c1b-4c8e-9d1e-{hostNumber:D12}\"",
            "unix_sock_group = \"root\"",
            "unix_sock_rw_perms = \"0700\"",
            "auth_unix_rw = \"none\"",
            "auth_unix_ro = \"none\"",
            "log_outputs = \"2:file:/var/log/libvirt/libvirtd.log\"",
            string.Empty)).ConfigureAwait(false);
        await File.WriteAllTextAsync(Path.Combine(etc, "qemu.conf"), string.Join('\n',
            "stdio_handler = \"file\"",
            "security_driver = \"none\"",
            "namespaces = [ ]",
            "user = \"root\"",
            "group = \"root\"",
            "dynamic_ownership = 0",
            "remember_owner = 0",
            "cgroup_controllers = [ ]",
            string.Empty)).ConfigureAwait(false);
        foreach (var f in new[] { "libvirt.conf", "virtlogd.conf", "virtlockd.conf" })
        {
            if (File.Exists(Path.Combine("/etc/libvirt", f)))
            {
                File.Copy(Path.Combine("/etc/libvirt", f), Path.Combine(etc, f), overwrite: true);
            }
        }

        // The installed hook: what an operator puts in /etc/libvirt/hooks/qemu.d/ (docs/management.md), plus one log line per run.
        var hook = Path.Combine(etc, "hooks", "qemu.d", "50-vhostcompat");
        var args = string.Join(' ', hookArguments.Select(a => "'" + a.Replace("'", "'\\''", StringComparison.Ordinal) + "'"));
        await File.WriteAllTextAsync(hook,
            "#!/bin/sh\n" +
            $"echo \"$(date -u +%H:%M:%S.%N) $*\" >> '{Path.Combine(root, "hook.log")}'\n" +
            $"exec env DOTNET_NOLOGO=1 DOTNET_CLI_TELEMETRY_OPTOUT=1 '{RepositoryLayout.DotnetHost}' '{CompatCli.DllPath}' libvirt hook {args} \"$@\"\n").ConfigureAwait(false);
        if (OperatingSystem.IsLinux())
        {
            File.SetUnixFileMode(hook, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
        }

        var daemon = ExternalProcess.Start(new ExternalProcessOptions("libvirtd-" + name, "/bin/sh", [RepositoryLayout.Script("libvirtd-node.sh"), root], run.Directory, TimeSpan.FromMinutes(15)));
        run.AddArtifact($"libvirtd {name} log", Path.Combine(root, "log", "libvirtd.log"));
        run.AddArtifact($"libvirtd {name} stderr", daemon.StderrPath);
        run.AddArtifact($"hook runs on {name}", Path.Combine(root, "hook.log"));
        var node = new LibvirtNode(run, name, root, daemon);
        if (!await LogFile.WaitForPathAsync(Path.Combine(root, "run", "libvirt-sock"), TimeSpan.FromSeconds(60), daemon).ConfigureAwait(false))
        {
            await node.DisposeAsync().ConfigureAwait(false);
            throw new InvalidOperationException($"libvirtd {name} did not create its socket within 60 s{run.Diagnostics()}");
        }

        // The socket exists a moment before the QEMU driver is ready: ask until it answers.
        VirshResult? version = null;
        for (int i = 0; i < 60 && (version is null || !version.Ok); i++)
        {
            version = await node.VirshAsync("version");
            if (!version.Ok)
            {
                await Task.Delay(250).ConfigureAwait(false);
            }
        }

        return version!.Ok ? node : throw new InvalidOperationException($"libvirtd {name} does not answer: {version}{run.Diagnostics()}");
    }

    public async Task<VirshResult> VirshAsync(params string[] arguments)
    {
        await using var p = ExternalProcess.Start(new ExternalProcessOptions("virsh-" + Name, "/usr/bin/virsh", ["-c", Uri, .. arguments], _run.Directory, TimeSpan.FromMinutes(3))
        {
            Environment = { ["LC_ALL"] = "C" },
        });
        var exited = await p.WaitForExitAsync(TimeSpan.FromMinutes(3)).ConfigureAwait(false);
        var elapsed = p.Elapsed;
        int? code = exited ? p.ExitCode : null;
        await p.DisposeAsync().ConfigureAwait(false);
        return new VirshResult(code, p.ReadStdout(), p.ReadStderr(), elapsed);
    }

    /// <summary>Remembers a domain to destroy at dispose (QEMU would outlive libvirtd otherwise).</summary>
    public void Track(string domain) => _domains.Add(domain);

    /// <summary><c>virsh domstate --reason</c>, trimmed (e.g. "running (booted)").</summary>
    public async Task<string> DomStateAsync(string domain) => (await VirshAsync("domstate", domain, "--reason").ConfigureAwait(false)).Stdout.Trim();

    /// <summary>Hook runs logged so far ("DOMAIN OPERATION SUB-OPERATION EXTRA" each).</summary>
    public IReadOnlyList<string> HookRuns() => LogFile.ReadLines(HookLogPath).Select(l => l[(l.IndexOf(' ', StringComparison.Ordinal) + 1)..]).ToList();

    public Task<Match?> WaitForHookRunAsync(Regex pattern, TimeSpan timeout) => LogFile.WaitForLineAsync(HookLogPath, pattern, timeout, Daemon);

    public async ValueTask DisposeAsync()
    {
        foreach (var d in _domains)
        {
            if (!Daemon.HasExited)
            {
                await VirshAsync("destroy", d).ConfigureAwait(false);
            }

            // A QEMU left behind (libvirtd gone) is killed by the PID libvirt recorded.
            var pidFile = Path.Combine(Root, "run", "qemu", d + ".pid");
            if (File.Exists(pidFile) && int.TryParse(File.ReadAllText(pidFile).Trim(), CultureInfo.InvariantCulture, out var pid))
            {
                try
                {
                    using var qemu = System.Diagnostics.Process.GetProcessById(pid);
                    if (qemu.ProcessName.StartsWith("qemu", StringComparison.Ordinal))
                    {
                        qemu.Kill();
                    }
                }
                catch (ArgumentException)
                {
                }
                catch (InvalidOperationException)
                {
                }
            }
        }

        await Daemon.StopAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        await Daemon.DisposeAsync().ConfigureAwait(false);
    }
}
