namespace VhostCompat.IntegrationTests.Support;

/// <summary>Counts this process's open fds and memory mappings (the I3 "no leaks" oracle).</summary>
internal static class ProcessResources
{
    public static int OpenFds() => System.IO.Directory.GetFiles("/proc/self/fd").Length;

    public static int Mappings() => File.ReadAllLines("/proc/self/maps").Length;

    /// <summary>Mappings of guest memory created by <c>GuestMemory</c> (memfd name "vhostcompat-guest"), on either side.</summary>
    public static int GuestMemoryMappings() => File.ReadAllLines("/proc/self/maps").Count(l => l.Contains("memfd:vhostcompat-guest", StringComparison.Ordinal));

    /// <summary>Waits until the fd count returns to (at most) the baseline, since the backend closes asynchronously.</summary>
    public static async Task<int> SettleFdsAsync(int baseline, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(3));
        int now = OpenFds();
        while (now > baseline && DateTime.UtcNow < deadline)
        {
            await Task.Delay(20);
            now = OpenFds();
        }

        return now;
    }
}
