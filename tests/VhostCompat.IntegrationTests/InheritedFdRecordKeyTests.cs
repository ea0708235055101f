using VhostCompat.Backend;
using VhostCompat.Compat;
using VhostCompat.IntegrationTests.Support;
using VhostCompat.Virtio;

namespace VhostCompat.IntegrationTests;

/// <summary>The record key of a backend serving an inherited fd (<c>--fd N</c>) is "fd-N" whatever the current directory.</summary>
public sealed class InheritedFdRecordKeyTests
{
    [Fact]
    public void The_record_of_an_inherited_fd_is_found_from_any_current_directory()
    {
        string stateDir = Directory.CreateTempSubdirectory("vhostcompat-fdkey-").FullName;
        var record = new AckedStateRecord("fd-7", VirtioDeviceType.Net, VirtioFeatureBits.Version1, 0, null, 2, new Dictionary<int, int>(), []);
        new AckedStateStore(stateDir).Save(record);
        string before = Environment.CurrentDirectory;
        try
        {
            foreach (string cwd in new[] { "/", Path.GetTempPath(), stateDir })
            {
                Environment.CurrentDirectory = cwd;
                var backend = new VhostUserBackend(new TestDevice(), new VhostUserBackendOptions { InheritedFd = 7, StateDirectory = stateDir });
                backend.LoadRecord().Should().NotBeNull($"from {cwd} the key is still fd-7")
                    .And.Subject.As<AckedStateRecord>().Key.Should().Be("fd-7");
            }
        }
        finally
        {
            Environment.CurrentDirectory = before;
            Directory.Delete(stateDir, recursive: true);
        }
    }
}
