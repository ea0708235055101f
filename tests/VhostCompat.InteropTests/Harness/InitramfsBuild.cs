using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace VhostCompat.InteropTests.Harness;

/// <summary>
/// The build-and-cache step shared by the guest initramfs kinds: scripts/build-&lt;kind&gt;.sh (which sources
/// scripts/initramfs-lib.sh) writes &lt;kind&gt;-&lt;kver&gt;-&lt;hash&gt;.cpio.gz into <see cref="Initramfs.CacheDirectory"/>,
/// never into the repository. The hash covers the script, the shared library, any further inputs, the kernel and
/// busybox, so a change to any of them builds a fresh file.
/// </summary>
internal static class InitramfsBuild
{
    public const string LibraryScript = "initramfs-lib.sh";

    /// <param name="tools">Kernel version and busybox.</param>
    /// <param name="gate">Serializes builds of this kind within the process.</param>
    /// <param name="kind">"initramfs", "initramfs-rng", ...: the script is build-<paramref name="kind"/>.sh.</param>
    /// <param name="description">What the failure message calls it ("guest initramfs").</param>
    /// <param name="extraInputs">Further files the build reads (e.g. a guest tool's source), next to the script.</param>
    public static async Task<string> GetAsync(InteropTools tools, SemaphoreSlim gate, string kind, string description, params string[] extraInputs)
    {
        ArgumentNullException.ThrowIfNull(tools);
        var script = RepositoryLayout.Script($"build-{kind}.sh");
        var inputs = new[] { script, RepositoryLayout.Script(LibraryScript) }
            .Concat(extraInputs.Select(f => Path.Combine(Path.GetDirectoryName(script)!, f)));
        var hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(
            string.Concat(inputs.Select(f => File.ReadAllText(f) + "\n")) + tools.KernelVersion + "\n" + tools.Busybox + "\n" + File.GetLastWriteTimeUtc(tools.Busybox).Ticks)))[..16];
        var output = Path.Combine(Initramfs.CacheDirectory, $"{kind}-{tools.KernelVersion}-{hash}.cpio.gz");

        await gate.WaitAsync().ConfigureAwait(false);
        try
        {
            if (File.Exists(output) && new FileInfo(output).Length > 0)
            {
                return output;
            }

            Directory.CreateDirectory(Initramfs.CacheDirectory);
            // Another test process may build the same file; the script writes OUT.tmp.<pid> and renames, so both are safe.
            var logDir = Path.Combine(Initramfs.CacheDirectory, $"{kind}-build-" + Environment.ProcessId.ToString(CultureInfo.InvariantCulture));
            await using (var build = ExternalProcess.Start(new ExternalProcessOptions(
                "build-" + kind, "/bin/bash", [script, output, tools.KernelVersion], logDir, TimeSpan.FromMinutes(2))
            {
                Environment = { ["BUSYBOX"] = tools.Busybox },
            }))
            {
                var sw = Stopwatch.StartNew();
                if (!await build.WaitForExitAsync(TimeSpan.FromMinutes(2)).ConfigureAwait(false) || build.ExitCode != 0 || !File.Exists(output))
                {
                    throw new InvalidOperationException(
                        $"building the {description} failed (exit {build.ExitCode?.ToString(CultureInfo.InvariantCulture) ?? "timeout"} after {sw.Elapsed.TotalSeconds:F1} s): {build.CommandLine}\n" +
                        build.ReadStdout() + build.ReadStderr());
                }
            }

            Directory.Delete(logDir, recursive: true);
            return output;
        }
        finally
        {
            gate.Release();
        }
    }
}
