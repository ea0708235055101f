using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace VhostCompat.InteropTests.Harness;

/// <summary>
/// Builds (once, cached by kernel version and script content) the virtio-rng guest initramfs with
/// scripts/build-initramfs-rng.sh into <see cref="Initramfs.CacheDirectory"/>, never into the repository.
/// </summary>
public static class RngInitramfs
{
    private static readonly SemaphoreSlim Gate = new(1, 1);

    public static async Task<string> GetAsync(InteropTools tools)
    {
        ArgumentNullException.ThrowIfNull(tools);
        var script = RepositoryLayout.Script("build-initramfs-rng.sh");
        var hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(
            File.ReadAllText(script) + "\n" + tools.KernelVersion + "\n" + tools.Busybox + "\n" + File.GetLastWriteTimeUtc(tools.Busybox).Ticks)))[..16];
        var output = Path.Combine(Initramfs.CacheDirectory, $"initramfs-rng-{tools.KernelVersion}-{hash}.cpio.gz");

        await Gate.WaitAsync().ConfigureAwait(false);
        try
        {
            if (File.Exists(output) && new FileInfo(output).Length > 0)
            {
                return output;
            }

            Directory.CreateDirectory(Initramfs.CacheDirectory);
            // The script writes OUT.tmp.<pid> and renames, so another test process building the same file is harmless.
            var logDir = Path.Combine(Initramfs.CacheDirectory, "initramfs-rng-build-" + Environment.ProcessId.ToString(CultureInfo.InvariantCulture));
            await using (var build = ExternalProcess.Start(new ExternalProcessOptions(
                "build-initramfs-rng", "/bin/bash", [script, output, tools.KernelVersion], logDir, TimeSpan.FromMinutes(2))
            {
                Environment = { ["BUSYBOX"] = tools.Busybox },
            }))
            {
                var sw = Stopwatch.StartNew();
                if (!await build.WaitForExitAsync(TimeSpan.FromMinutes(2)).ConfigureAwait(false) || build.ExitCode != 0 || !File.Exists(output))
                {
                    throw new InvalidOperationException(
                        $"building the virtio-rng guest initramfs failed (exit {build.ExitCode?.ToString(CultureInfo.InvariantCulture) ?? "timeout"} after {sw.Elapsed.TotalSeconds:F1} s): {build.CommandLine}\n" +
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
