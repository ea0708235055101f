namespace VhostCompat.Tests;

/// <summary>
/// The public API of the VhostCompat.Hosting package (hosting extensions, the backend-program runner) against its
/// checked-in snapshot, PublicApi.Hosting.txt; VHOSTCOMPAT_UPDATE_API=1 rewrites it, as for the core assembly.
/// </summary>
public sealed class HostingPublicApiTests
{
    [Fact]
    public void Hosting_public_api_matches_the_checked_in_snapshot()
    {
        string actual = PublicApiTests.Render(typeof(VhostCompat.Hosting.VhostUserBackendProgram).Assembly);
        string path = Path.Combine(RepoRoot(), "tests", "VhostCompat.Tests", "PublicApi.Hosting.txt");
        if (Environment.GetEnvironmentVariable("VHOSTCOMPAT_UPDATE_API") == "1")
        {
            File.WriteAllText(path, actual);
        }

        File.Exists(path).Should().BeTrue("the snapshot is checked in");
        actual.Should().Be(File.ReadAllText(path), "the public API changed: review it, then update PublicApi.Hosting.txt (VHOSTCOMPAT_UPDATE_API=1)");
    }

    [Fact]
    public void Only_the_runner_the_hosting_extensions_and_nothing_else_is_public()
    {
        typeof(VhostCompat.Hosting.VhostUserBackendProgram).Assembly.GetExportedTypes().Select(t => t.Name).Order(StringComparer.Ordinal)
            .Should().Equal("BackendProgramBuilder", "BackendProgramContext", "VhostUserBackendProgram", "VhostUserServiceCollectionExtensions");
    }

    private static string RepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "VhostCompat.sln")))
        {
            dir = dir.Parent;
        }

        return dir?.FullName ?? throw new InvalidOperationException("repository root not found");
    }
}
