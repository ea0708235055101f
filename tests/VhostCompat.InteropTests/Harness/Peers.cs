using System.Text.RegularExpressions;

namespace VhostCompat.InteropTests.Harness;

/// <summary>
/// The peers .ci/provision-peers.sh provisions next to Debian 12's own (QEMU 10.0 from bookworm-backports, DPDK 24.11 in a
/// Debian 13 chroot), as KEY=VALUE lines in VHOSTCOMPAT_PEERS_ENV (default /opt/vhostcompat-peers/peers.env). An
/// environment variable of the same name overrides the file.
/// </summary>
public static class PeersFile
{
    public const string PathVariable = "VHOSTCOMPAT_PEERS_ENV";

    public static string Path =>
        Environment.GetEnvironmentVariable(PathVariable) is { Length: > 0 } p ? p : "/opt/vhostcompat-peers/peers.env";

    /// <summary>The value of <paramref name="key"/> (environment first, then the file), or null.</summary>
    public static string? Get(string key)
    {
        if (Environment.GetEnvironmentVariable(key) is { Length: > 0 } v)
        {
            return v;
        }

        if (!File.Exists(Path))
        {
            return null;
        }

        string? found = null;
        foreach (var line in File.ReadLines(Path))
        {
            if (line.StartsWith(key + "=", StringComparison.Ordinal))
            {
                found = line[(key.Length + 1)..].Trim();
            }
        }

        return string.IsNullOrEmpty(found) ? null : found;
    }
}

/// <summary>
/// One QEMU build the interop guests can run: its binary, the -L data directories (firmware, option ROMs), the module
/// directory (QEMU_MODULE_DIR) and the version series its <c>--version</c> must report. <see cref="Binary"/> null means
/// not provisioned on this machine; <see cref="Missing"/> says what is missing.
/// </summary>
public sealed record QemuPeer(string Name, string? Binary, IReadOnlyList<string> DataDirs, string? ModuleDir, string VersionSeries, string Missing)
{
    /// <summary>Debian 12's QEMU 7.2 (VHOSTCOMPAT_QEMU or qemu-system-x86_64 in PATH): what every test uses by default.</summary>
    public static QemuPeer Qemu72
    {
        get
        {
            var explicitPath = Environment.GetEnvironmentVariable("VHOSTCOMPAT_QEMU");
            var bin = string.IsNullOrEmpty(explicitPath) ? InteropPrerequisites.FindInPath("qemu-system-x86_64") : explicitPath;
            return new QemuPeer("QEMU 7.2", bin, [], null, "7.2", "qemu-system-x86_64 not found (package qemu-system-x86)");
        }
    }

    /// <summary>QEMU 10.0 from bookworm-backports, unpacked by .ci/provision-peers.sh (VHOSTCOMPAT_QEMU10_* in the peers file).</summary>
    public static QemuPeer Qemu100
    {
        get
        {
            var dirs = PeersFile.Get("VHOSTCOMPAT_QEMU10_L") is { } l ? l.Split(':', StringSplitOptions.RemoveEmptyEntries) : [];
            return new QemuPeer(
                "QEMU 10.0",
                PeersFile.Get("VHOSTCOMPAT_QEMU10_BIN"),
                dirs,
                PeersFile.Get("VHOSTCOMPAT_QEMU10_MODULE_DIR"),
                "10.0",
                $"QEMU 10.0: VHOSTCOMPAT_QEMU10_BIN is neither set nor in {PeersFile.Path} (run .ci/provision-peers.sh as root)");
        }
    }

    /// <summary>The -L arguments that go before every other QEMU argument.</summary>
    public IEnumerable<string> DataDirArguments() => DataDirs.SelectMany(d => new[] { "-L", d });

    /// <summary>QEMU_MODULE_DIR for the process, when this build has its own.</summary>
    public void ApplyEnvironment(IDictionary<string, string> environment)
    {
        ArgumentNullException.ThrowIfNull(environment);
        if (ModuleDir is { Length: > 0 })
        {
            environment["QEMU_MODULE_DIR"] = ModuleDir;
        }
    }
}

/// <summary>One dpdk-testpmd build: the executable (or the chroot wrapper) and the DPDK version series it must report.</summary>
public sealed record DpdkPeer(string Name, string? Testpmd, string VersionSeries, string Missing)
{
    /// <summary>Debian 12's dpdk-testpmd 22.11 (VHOSTCOMPAT_TESTPMD or PATH): what every test uses by default.</summary>
    public static DpdkPeer Dpdk2211 => new("DPDK 22.11", DpdkVhostBackend.TestpmdPath, "22.11", "dpdk-testpmd missing (apt-get install dpdk dpdk-dev)");

    /// <summary>DPDK 24.11 in the Debian 13 chroot, entered by .ci/dpdk-24.11-testpmd (VHOSTCOMPAT_DPDK2411_TESTPMD in the peers file).</summary>
    public static DpdkPeer Dpdk2411 => new(
        "DPDK 24.11",
        PeersFile.Get("VHOSTCOMPAT_DPDK2411_TESTPMD"),
        "24.11",
        $"DPDK 24.11: VHOSTCOMPAT_DPDK2411_TESTPMD is neither set nor in {PeersFile.Path} (run .ci/provision-peers.sh as root)");
}

/// <summary>Checks that a peer is there and is the version it claims to be (skip, or fail when interop is required).</summary>
public static partial class PeerCheck
{
    [GeneratedRegex(@"QEMU emulator version (?<v>[0-9][0-9.]*)", RegexOptions.CultureInvariant)]
    private static partial Regex QemuVersion();

    [GeneratedRegex(@"RTE Version: 'DPDK (?<v>[0-9][0-9.]*)", RegexOptions.CultureInvariant)]
    private static partial Regex DpdkVersion();

    /// <summary>Runs <c>QEMU -L ... --version</c> with the peer's environment; returns the version or a reason.</summary>
    public static (string? Version, string? Problem) QemuVersionOf(QemuPeer peer)
    {
        ArgumentNullException.ThrowIfNull(peer);
        if (peer.Binary is null || !File.Exists(peer.Binary))
        {
            return (null, peer.Binary is null ? peer.Missing : $"{peer.Name}: {peer.Binary} does not exist ({peer.Missing})");
        }

        var env = new Dictionary<string, string>(StringComparer.Ordinal);
        peer.ApplyEnvironment(env);
        var output = Run(peer.Binary, [.. peer.DataDirArguments(), "--version"], env);
        var m = QemuVersion().Match(output);
        if (!m.Success)
        {
            return (null, $"{peer.Name}: '{peer.Binary} --version' printed no 'QEMU emulator version' line: {output.Trim()}");
        }

        var v = m.Groups["v"].Value;
        return v.StartsWith(peer.VersionSeries + ".", StringComparison.Ordinal)
            ? (v, null)
            : (v, $"{peer.Name}: {peer.Binary} is QEMU {v}, expected {peer.VersionSeries}.x");
    }

    /// <summary>Runs EAL's version print (<c>-v</c>, no hugepages/PCI) of the peer's testpmd; returns the version or a reason.</summary>
    public static (string? Version, string? Problem) DpdkVersionOf(DpdkPeer peer)
    {
        ArgumentNullException.ThrowIfNull(peer);
        if (peer.Testpmd is null || !File.Exists(peer.Testpmd))
        {
            return (null, peer.Testpmd is null ? peer.Missing : $"{peer.Name}: {peer.Testpmd} does not exist ({peer.Missing})");
        }

        var prefix = "vcver" + Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var output = Run(peer.Testpmd, ["--no-huge", "-m", "64", "--no-pci", "--file-prefix", prefix, "-l", "0", "-v", "--", "--help"], null);
        try
        {
            Directory.Delete(System.IO.Path.Combine("/var/run/dpdk", prefix), recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }

        var m = DpdkVersion().Match(output);
        if (!m.Success)
        {
            return (null, $"{peer.Name}: '{peer.Testpmd} -v' printed no 'RTE Version' line: {string.Join(" | ", output.Trim().Split('\n').TakeLast(5))}");
        }

        var v = m.Groups["v"].Value;
        return v.StartsWith(peer.VersionSeries + ".", StringComparison.Ordinal)
            ? (v, null)
            : (v, $"{peer.Name}: {peer.Testpmd} is DPDK {v}, expected {peer.VersionSeries}.x");
    }

    /// <summary>Skips (or, with VHOSTCOMPAT_REQUIRE_INTEROP, fails) the calling test when <paramref name="problem"/> is set.</summary>
    public static void SkipOrFail(string? problem)
    {
        if (problem is null)
        {
            return;
        }

        if (InteropPrerequisites.Required)
        {
            Assert.Fail($"{InteropPrerequisites.RequireVariable} is set, but {problem}");
        }

        Skip.If(true, $"{problem}; set {InteropPrerequisites.RequireVariable}=1 to make this a failure");
    }

    private static string Run(string fileName, IReadOnlyList<string> args, IDictionary<string, string>? env)
    {
        var psi = new System.Diagnostics.ProcessStartInfo(fileName)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        foreach (var (k, v) in env ?? new Dictionary<string, string>())
        {
            psi.Environment[k] = v;
        }

        using var p = System.Diagnostics.Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {fileName}");
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromSeconds(60)))
        {
            p.Kill(entireProcessTree: true);
            return $"(timed out after 60 s) {stdout.Result}{stderr.Result}";
        }

        return stdout.Result + stderr.Result;
    }
}
