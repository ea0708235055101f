using System.Buffers.Binary;

namespace VhostCompat.InteropTests.Harness;

/// <summary>The external peers an interop test needs, found on this machine.</summary>
public sealed record InteropTools(string Qemu, string Kernel, string KernelVersion, string Busybox)
{
    /// <summary>The QEMU build chosen with <see cref="InteropPrerequisites.RequireQemuGuest(QemuPeer)"/> (its -L dirs and module dir); null: <see cref="Qemu"/> as is.</summary>
    public QemuPeer? QemuPeer { get; init; }

    /// <summary>What <c>--version</c> reported for <see cref="QemuPeer"/> (null without a peer).</summary>
    public string? QemuVersion { get; init; }
}

/// <summary>
/// Finds QEMU, a kernel with virtio modules and a static busybox. Missing peers skip the test, unless
/// <see cref="RequireVariable"/> is set (CI sets it), in which case the test fails and says what is missing.
/// </summary>
public static class InteropPrerequisites
{
    public const string RequireVariable = "VHOSTCOMPAT_REQUIRE_INTEROP";

    private const string InstallHint = "apt-get install qemu-system-x86 linux-image-amd64 busybox-static cpio xz-utils";

    public static bool Required
    {
        get
        {
            var v = Environment.GetEnvironmentVariable(RequireVariable);
            return !string.IsNullOrWhiteSpace(v) && v.Trim() is not ("0" or "false" or "False" or "no");
        }
    }

    /// <summary>Returns the tools, or skips (Skip.If) / fails (Assert.Fail) the calling [SkippableFact].</summary>
    public static InteropTools RequireQemuGuest() => RequireQemuGuest(null);

    /// <summary>
    /// Like <see cref="RequireQemuGuest()"/>, with the given QEMU build instead of the one in PATH: a missing build or
    /// one whose <c>--version</c> is not <see cref="QemuPeer.VersionSeries"/> skips, or fails when interop is required
    /// (never a fallback to another QEMU).
    /// </summary>
    public static InteropTools RequireQemuGuest(QemuPeer? peer)
    {
        var missing = new List<string>();
        string? qemu;
        string? version = null;
        if (peer is null)
        {
            qemu = FindQemu(missing);
        }
        else
        {
            (version, var problem) = PeerCheck.QemuVersionOf(peer);
            qemu = peer.Binary;
            if (problem is not null)
            {
                missing.Add(problem);
            }
        }

        var (kernel, kver) = FindKernel(missing);
        var busybox = FindBusybox(missing);
        foreach (var tool in new[] { "cpio", "xz", "gzip" })
        {
            if (FindInPath(tool) is null)
            {
                missing.Add($"'{tool}' not in PATH");
            }
        }

        if (missing.Count > 0)
        {
            var what = string.Join("; ", missing);
            if (Required)
            {
                Assert.Fail($"{RequireVariable} is set, but interop peers are missing: {what}. Install them with: {InstallHint}");
            }

            Skip.If(true, $"interop peers missing ({what}); install with '{InstallHint}', set {RequireVariable}=1 to make this a failure");
        }

        return new InteropTools(qemu!, kernel!, kver!, busybox!) { QemuPeer = peer, QemuVersion = version };
    }

    /// <summary>dpdk-testpmd (VHOSTCOMPAT_TESTPMD or PATH), or skips / fails the calling [SkippableFact] like <see cref="RequireQemuGuest"/>.</summary>
    /// <summary>
    /// The testpmd of <paramref name="peer"/> after checking its EAL version: missing or the wrong version skips, or fails
    /// when interop is required (never a fallback to another DPDK).
    /// </summary>
    public static string RequireTestpmd(DpdkPeer peer)
    {
        ArgumentNullException.ThrowIfNull(peer);
        var (_, problem) = PeerCheck.DpdkVersionOf(peer);
        PeerCheck.SkipOrFail(problem);
        return peer.Testpmd!;
    }

    public static string RequireTestpmd()
    {
        var testpmd = DpdkVhostBackend.TestpmdPath;
        if (testpmd is not null && File.Exists(testpmd))
        {
            return testpmd;
        }

        const string what = "dpdk-testpmd missing (apt-get install dpdk dpdk-dev)";
        if (Required)
        {
            Assert.Fail($"{RequireVariable} is set, but {what}");
        }

        Skip.If(true, $"{what}; set {RequireVariable}=1 to make this a failure");
        return string.Empty;
    }

    public static string? FindInPath(string name)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/local/bin:/usr/bin:/bin").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            var p = Path.Combine(dir, name);
            if (File.Exists(p))
            {
                return p;
            }
        }

        return null;
    }

    private static string? FindQemu(List<string> missing)
    {
        var explicitPath = Environment.GetEnvironmentVariable("VHOSTCOMPAT_QEMU");
        var qemu = string.IsNullOrEmpty(explicitPath) ? FindInPath("qemu-system-x86_64") : explicitPath;
        if (qemu is null || !File.Exists(qemu))
        {
            missing.Add("qemu-system-x86_64 not found (package qemu-system-x86)");
            return null;
        }

        return qemu;
    }

    /// <summary>Newest /boot/vmlinuz-KVER that has /lib/modules/KVER with virtio_net (or VHOSTCOMPAT_KERNEL).</summary>
    private static (string? Kernel, string? Version) FindKernel(List<string> missing)
    {
        var explicitKernel = Environment.GetEnvironmentVariable("VHOSTCOMPAT_KERNEL");
        var candidates = !string.IsNullOrEmpty(explicitKernel)
            ? new[] { explicitKernel }
            : Directory.Exists("/boot")
                ? Directory.GetFiles("/boot", "vmlinuz-*").OrderByDescending(p => p, VersionAwareComparer.Instance).ToArray()
                : [];
        foreach (var kernel in candidates)
        {
            var name = Path.GetFileName(kernel);
            var kver = name.StartsWith("vmlinuz-", StringComparison.Ordinal) ? name["vmlinuz-".Length..] : name;
            var dep = Path.Combine("/lib/modules", kver, "modules.dep");
            if (File.Exists(kernel) && File.Exists(dep) && File.ReadAllText(dep).Contains("virtio_net.ko", StringComparison.Ordinal))
            {
                return (kernel, kver);
            }
        }

        missing.Add(candidates.Length == 0
            ? "no kernel /boot/vmlinuz-* (package linux-image-amd64)"
            : $"no kernel among {string.Join(", ", candidates)} has /lib/modules/<version>/modules.dep with virtio_net (package linux-image-amd64)");
        return (null, null);
    }

    private static string? FindBusybox(List<string> missing)
    {
        var busybox = Environment.GetEnvironmentVariable("VHOSTCOMPAT_BUSYBOX") is { Length: > 0 } b ? b : "/bin/busybox";
        if (!File.Exists(busybox))
        {
            missing.Add($"{busybox} not found (package busybox-static)");
            return null;
        }

        if (!IsStaticElf(busybox))
        {
            missing.Add($"{busybox} is dynamically linked (package busybox-static replaces busybox)");
            return null;
        }

        return busybox;
    }

    /// <summary>True for an ELF64 executable without a PT_INTERP program header (i.e. statically linked).</summary>
    private static bool IsStaticElf(string path)
    {
        try
        {
            var bytes = File.ReadAllBytes(path);
            if (bytes.Length < 64 || bytes[0] != 0x7f || bytes[1] != (byte)'E' || bytes[2] != (byte)'L' || bytes[3] != (byte)'F' || bytes[4] != 2 || bytes[5] != 1)
            {
                return false;
            }

            var phoff = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(0x20));
            int phentsize = BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(0x36));
            int phnum = BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(0x38));
            for (var i = 0; i < phnum; i++)
            {
                var off = phoff + ((long)i * phentsize);
                if (off + 4 > bytes.Length)
                {
                    return false;
                }

                if (BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan((int)off)) == 3 /* PT_INTERP */)
                {
                    return false;
                }
            }

            return true;
        }
        catch (IOException)
        {
            return false;
        }
        catch (UnauthorizedAccessException)
        {
            return false;
        }
    }
}

/// <summary>Orders "vmlinuz-6.1.0-9" before "vmlinuz-6.1.0-56" (digit runs compared as numbers).</summary>
internal sealed class VersionAwareComparer : IComparer<string>
{
    public static readonly VersionAwareComparer Instance = new();

    public int Compare(string? x, string? y)
    {
        if (x is null || y is null)
        {
            return string.CompareOrdinal(x, y);
        }

        int i = 0, j = 0;
        while (i < x.Length && j < y.Length)
        {
            if (char.IsAsciiDigit(x[i]) && char.IsAsciiDigit(y[j]))
            {
                int si = i, sj = j;
                while (i < x.Length && char.IsAsciiDigit(x[i]))
                {
                    i++;
                }

                while (j < y.Length && char.IsAsciiDigit(y[j]))
                {
                    j++;
                }

                var a = x[si..i].TrimStart('0');
                var b = y[sj..j].TrimStart('0');
                var c = a.Length != b.Length ? a.Length.CompareTo(b.Length) : string.CompareOrdinal(a, b);
                if (c != 0)
                {
                    return c;
                }
            }
            else
            {
                if (x[i] != y[j])
                {
                    return x[i].CompareTo(y[j]);
                }

                i++;
                j++;
            }
        }

        return (x.Length - i).CompareTo(y.Length - j);
    }
}
