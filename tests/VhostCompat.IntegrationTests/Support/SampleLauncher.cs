using System.Diagnostics;

namespace VhostCompat.IntegrationTests.Support;

/// <summary>Starts a sample program (built with the same configuration as the tests) as its own process.</summary>
internal static class SampleLauncher
{
    /// <summary>samples/<paramref name="sample"/>/bin/&lt;configuration&gt;/net10.0/VhostCompat.Samples.<paramref name="sample"/>.dll.</summary>
    public static string DllPath(string sample)
    {
        string config = Path.GetFileName(Path.GetDirectoryName(AppContext.BaseDirectory.TrimEnd('/')))!; // bin/<Configuration>/net10.0
        string root = AppContext.BaseDirectory;
        while (!File.Exists(Path.Combine(root, "VhostCompat.sln")))
        {
            root = Path.GetDirectoryName(root.TrimEnd('/'))!;
        }

        return Path.Combine(root, "samples", sample, "bin", config, "net10.0", $"VhostCompat.Samples.{sample}.dll");
    }

    /// <summary>Runs the sample with <paramref name="args"/> (stdout and stderr redirected).</summary>
    public static Process Start(string sample, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(DllPath(sample));
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        return Process.Start(psi)!;
    }

    /// <summary>Waits for the sample to create <paramref name="socketPath"/>; fails with its stderr if it exits first.</summary>
    public static async Task WaitForSocketAsync(Process sample, string socketPath, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!File.Exists(socketPath))
        {
            if (sample.HasExited)
            {
                Assert.Fail($"the sample exited with {sample.ExitCode}: {await sample.StandardError.ReadToEndAsync()}");
            }

            DateTime.UtcNow.Should().BeBefore(deadline);
            await Task.Delay(50);
        }
    }
}
