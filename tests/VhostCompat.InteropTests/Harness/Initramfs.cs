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

    public static Task<string> GetAsync(InteropTools tools) => InitramfsBuild.GetAsync(tools, Gate, "initramfs", "guest initramfs");
}
