using System.Text.Json;
using VhostCompat.Interop;
using VhostCompat.Protocol;
using VhostCompat.Tests.Support;

namespace VhostCompat.Tests.Proxy;

/// <summary>The fds of a traced message are typed with fstat, fstatfs, F_GET_SEALS and /proc/self/fd (real fds, no fakes).</summary>
public sealed class TraceFdTests
{
    private static JsonElement OnlyFd(TraceHarness t)
    {
        var fds = t.LastJson.GetProperty("fds").EnumerateArray().ToArray();
        fds.Should().HaveCount(1);
        return fds[0];
    }

    [Fact]
    public void Sealed_memfd_shows_name_size_and_seals()
    {
        var t = new TraceHarness();
        string name = Memfd.UniqueName("trace-ram");
        using var memfd = Memfd.Create(0x20000, name);
        Libc.TryAddSeals(memfd.Value, Libc.F_SEAL_SHRINK | Libc.F_SEAL_GROW, out _).Should().BeTrue();
        var table = MemoryTablePayload.Encode([new MemoryRegionPayload(0, 0x20000, 0x7f0000000000, 0)]);

        t.Request(FrontendRequest.SetMemTable, table, fds: [memfd.Value]);

        t.LastText.Should().EndWith($" fd0=memfd(name={name},size=131072,seals=0x6(shrink|grow))");
        var fd = OnlyFd(t);
        fd.GetProperty("fd").GetInt32().Should().Be(memfd.Value);
        fd.GetProperty("type").GetString().Should().Be("memfd");
        fd.GetProperty("name").GetString().Should().Be(name);
        fd.GetProperty("size").GetInt64().Should().Be(0x20000);
        fd.GetProperty("seals").GetProperty("names").EnumerateArray().Select(e => e.GetString()).Should().Equal("shrink", "grow");
    }

    [Fact]
    public void Eventfd_is_named_eventfd()
    {
        var t = new TraceHarness();
        using var efd = FileDescriptor.CreateEventFd();

        t.Request(FrontendRequest.SetVringKick, U64Payload.Encode(VringFileWord.Make(0, noFd: false)), fds: [efd.Value]);

        t.LastText.Should().EndWith("index=0 no-fd=false fd0=eventfd");
        OnlyFd(t).GetProperty("type").GetString().Should().Be("eventfd");
    }

    [Fact]
    public void Socket_is_named_socket_with_its_inode()
    {
        var t = new TraceHarness();
        var (a, b) = Libc.SocketPair();
        using var mine = new FileDescriptor(a);
        using var theirs = new FileDescriptor(b);

        t.Request(FrontendRequest.SetBackendReqFd, [], fds: [theirs.Value]);

        t.LastText.Should().MatchRegex(@"SET_BACKEND_REQ_FD flags=0x1\(v1\) size=0 fd0=socket\(target=socket:\[\d+\]\)$");
        var fd = OnlyFd(t);
        fd.GetProperty("type").GetString().Should().Be("socket");
        fd.GetProperty("target").GetString().Should().StartWith("socket:[");
    }

    [Fact]
    public void Regular_file_shows_path_and_size()
    {
        var t = new TraceHarness();
        using var dir = new TempDir("vhc-trace");
        string path = dir.Combine("log area");
        File.WriteAllBytes(path, new byte[4096]);
        using var file = Memfd.OpenReadOnly(path);

        t.Request(FrontendRequest.SetLogBase, new LogDescriptionPayload(4096, 0).Encode(), fds: [file.Value]);

        t.LastText.Should().EndWith($" fd0=file(path=\"{path}\",size=4096)");
        var fd = OnlyFd(t);
        fd.GetProperty("type").GetString().Should().Be("file");
        fd.GetProperty("path").GetString().Should().Be(path);
        fd.GetProperty("size").GetInt64().Should().Be(4096);
    }

    [Fact]
    public void Pipe_is_other_and_a_closed_number_is_invalid()
    {
        var t = new TraceHarness();
        var (r, w) = Libc.Pipe();
        using var read = new FileDescriptor(r);
        using var write = new FileDescriptor(w);

        t.Request(FrontendRequest.SetLogFd, [], fds: [read.Value, 987654]);

        var fds = t.LastJson.GetProperty("fds").EnumerateArray().ToArray();
        fds[0].GetProperty("type").GetString().Should().Be("other");
        fds[0].GetProperty("target").GetString().Should().StartWith("pipe:[");
        fds[1].GetProperty("type").GetString().Should().Be("invalid");
        fds[1].GetProperty("errno").GetInt32().Should().Be(Libc.EBADF);
        t.LastText.Should().EndWith(" fd1=invalid(errno=9)");
    }

    [Fact]
    public void Unsealable_memfd_reports_the_seal_seal()
    {
        int raw = Libc.MemfdCreate("trace-nohuge", Libc.MFD_CLOEXEC);
        raw.Should().BeGreaterThanOrEqualTo(0);
        using var memfd = new FileDescriptor(raw);

        var info = FileDescriptorInfo.Inspect(memfd.Value);

        info.Kind.Should().Be(FileDescriptorKind.Memfd);
        info.MemfdName.Should().Be("trace-nohuge");
        info.Seals.Should().Be(Libc.F_SEAL_SEAL);
        info.OnHugetlbfs.Should().BeFalse();
    }
}
