using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;

namespace VhostCompat.InteropTests.Harness;

/// <summary>
/// Builds (once, cached by kernel version and script content) the busybox guest initramfs with
/// scripts/build-initramfs.sh into <see cref="CacheDirectory"/>, never into the repository.
/// </summary>
public static class Initramfs
{
    private static readonly SemaphoreSlim Gate = new(1, 1);

    /// <summary>VHOSTCOMPAT_INTEROP_DIR or /tmp/vhostcompat-interop.</summary>
    public static string CacheDirectory =>
        Environment.GetEnvironmentVariable("VHOSTCOMPAT_INTEROP_DIR") is { Length: > 0 } d ? d : Path.Combine(Path.GetTempPath(), "vhostcompat-interop");

    public static async Task<string> GetAsync(InteropTools tools)
    {
        ArgumentNullException.ThrowIfNull(tools);
        var script = RepositoryLayout.Script("build-initramfs.sh");
        var hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(
            File.ReadAllText(script) + "\n" + tools.KernelVersion + "\n" + tools.Busybox + "\n" + File.GetLastWriteTimeUtc(tools.Busybox).Ticks)))[..16];
        var output = Path.Combine(CacheDirectory, $"initramfs-{tools.KernelVersion}-{hash}.cpio.gz");

        await Gate.WaitAsync().ConfigureAwait(false);
        try
        {
            if (File.Exists(output) && new FileInfo(output).Length > 0)
            {
                return output;
            }

            Directory.CreateDirectory(CacheDirectory);
            // Another test process may build the same file; the script writes OUT.tmp.<pid> and renames, so both are safe.
            var logDir = Path.Combine(CacheDirectory, "initramfs-build-" + Environment.ProcessId);
            await using (var build = ExternalProcess.Start(new ExternalProcessOptions(
                "build-initramfs", "/bin/bash", [script, output, tools.KernelVersion], logDir, TimeSpan.FromMinutes(2))
            {
                Environment = { ["BUSYBOX"] = tools.Busybox },
            }))
            {
                var sw = Stopwatch.StartNew();
                if (!await build.WaitForExitAsync(TimeSpan.FromMinutes(2)).ConfigureAwait(false) || build.ExitCode != 0 || !File.Exists(output))
                {
                    throw new InvalidOperationException(
                        $"building the guest initramfs failed (exit {build.ExitCode?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "timeout"} after {sw.Elapsed.TotalSeconds:F1} s): {build.CommandLine}\n" +
                        build.ReadStdout() + build.ReadStderr());
                }
            }

            Directory.Delete(logDir, recursive: true);
            return output;
        }
        finally
        {
            Gate.Release();
        }
    }
}
