namespace VhostCompat.InteropTests.Harness;

/// <summary>
/// Builds (once, cached by kernel version and script content) the virtio-rng guest initramfs with
/// scripts/build-initramfs-rng.sh into <see cref="Initramfs.CacheDirectory"/>, never into the repository.
/// </summary>
public static class RngInitramfs
{
    private static readonly SemaphoreSlim Gate = new(1, 1);

    public static Task<string> GetAsync(InteropTools tools) => InitramfsBuild.GetAsync(tools, Gate, "initramfs-rng", "virtio-rng guest initramfs");
}
