using System.Reflection;

namespace VhostCompat.InteropTests.Harness;

/// <summary>Where the repository, the build configuration and the sample backends are.</summary>
public static class RepositoryLayout
{
    private static readonly Lazy<string> Root = new(FindRoot);

    /// <summary>Directory holding VhostCompat.sln, found by walking up from the test assembly.</summary>
    public static string RepositoryRoot => Root.Value;

    /// <summary>Build configuration of this test assembly (Debug/Release); samples are built with the same one.</summary>
    public static string Configuration =>
        typeof(RepositoryLayout).Assembly.GetCustomAttribute<AssemblyConfigurationAttribute>()?.Configuration is { Length: > 0 } c ? c : "Debug";

    /// <summary>Script shipped next to the test assembly (copied by the build), else from the source tree.</summary>
    public static string Script(string name)
    {
        var beside = Path.Combine(AppContext.BaseDirectory, "scripts", name);
        return File.Exists(beside) ? beside : Path.Combine(RepositoryRoot, "tests", "VhostCompat.InteropTests", "scripts", name);
    }

    /// <summary>
    /// Path of a sample's built dll: VHOSTCOMPAT_SAMPLE_&lt;NAME&gt;_DLL, else samples/&lt;dir&gt;/bin/&lt;Configuration&gt;/&lt;tfm&gt;/&lt;assembly&gt;.dll
    /// (the ProjectReference in this project makes the build produce it), else the newest build of any configuration.
    /// </summary>
    public static string SampleDll(string sampleDirectory, string assemblyName)
    {
        ArgumentNullException.ThrowIfNull(sampleDirectory);
        var overrideVar = "VHOSTCOMPAT_SAMPLE_" + sampleDirectory.ToUpperInvariant() + "_DLL";
        if (Environment.GetEnvironmentVariable(overrideVar) is { Length: > 0 } explicitPath)
        {
            return explicitPath;
        }

        var tfm = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd('/')).Name; // bin/<cfg>/<tfm>/
        var bin = Path.Combine(RepositoryRoot, "samples", sampleDirectory, "bin");
        var expected = Path.Combine(bin, Configuration, tfm, assemblyName + ".dll");
        if (File.Exists(expected))
        {
            return expected;
        }

        var any = Directory.Exists(bin)
            ? Directory.GetFiles(bin, assemblyName + ".dll", SearchOption.AllDirectories).OrderByDescending(File.GetLastWriteTimeUtc).FirstOrDefault()
            : null;
        return any ?? throw new FileNotFoundException(
            $"sample backend not built: {expected} (build it: dotnet build samples/{sampleDirectory} -c {Configuration}, or set {overrideVar})", expected);
    }

    /// <summary>The dotnet host that runs this test (so the sample runs on the same runtime).</summary>
    public static string DotnetHost
    {
        get
        {
            if (Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } h && File.Exists(h))
            {
                return h;
            }

            var self = Environment.ProcessPath;
            if (self is not null && Path.GetFileName(self) == "dotnet")
            {
                return self;
            }

            return InteropPrerequisites.FindInPath("dotnet") ?? "dotnet";
        }
    }

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "VhostCompat.sln")))
            {
                return dir.FullName;
            }
        }

        throw new DirectoryNotFoundException($"VhostCompat.sln not found above {AppContext.BaseDirectory}");
    }
}
