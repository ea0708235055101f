using System.Collections.Concurrent;
using System.Net.Sockets;
using VhostCompat.Backend;
using VhostCompat.IntegrationTests.Support;
using VhostCompat.Proxy;

namespace VhostCompat.IntegrationTests;

/// <summary>
/// A backend that goes away while the proxy checks it (a dying listener's backlog still accepts, then resets: what
/// the DPDK upgrade interop test met when it killed testpmd) is waited for again, not refused.
/// </summary>
public sealed class ProxyBackendGoneTests
{
    [Fact]
    public async Task A_backend_that_closes_before_answering_the_check_is_not_refused_and_the_next_one_is_checked()
    {
        string dir = Directory.CreateTempSubdirectory("vhostcompat-gone-").FullName;
        string backendPath = Path.Combine(dir, "backend.sock");
        var states = new ConcurrentQueue<VhostUserProxyState>();
        var checkedAgain = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var proxy = new VhostUserProxy(new VhostUserProxyOptions
        {
            ListenPath = Path.Combine(dir, "proxy.sock"),
            BackendPath = backendPath,
            ReconnectMaxDelay = TimeSpan.FromMilliseconds(200),
        });
        proxy.StateChanged += s =>
        {
            states.Enqueue(s);
            if (s == VhostUserProxyState.WaitingForFrontend)
            {
                checkedAgain.TrySetResult();
            }
        };

        using var stop = new CancellationTokenSource();
        using (var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            listener.Bind(new UnixDomainSocketEndPoint(backendPath));
            listener.Listen(1);
            Task run = Task.Run(() => proxy.RunAsync(stop.Token));
            using Socket accepted = await listener.AcceptAsync().WaitAsync(TimeSpan.FromSeconds(20));
            var header = new byte[12];
            int n = await accepted.ReceiveAsync(header, SocketFlags.None).WaitAsync(TimeSpan.FromSeconds(20));
            n.Should().Be(12, "the proxy's check starts with GET_FEATURES");
            accepted.Close(); // gone before replying
            File.Delete(backendPath);

            await using var fx = new BackendOnPath(backendPath);
            await checkedAgain.Task.WaitAsync(TimeSpan.FromSeconds(20));
            states.Should().NotContain(VhostUserProxyState.Refused, "a backend that went away is waited for, not refused");
            proxy.Problems.Should().BeEmpty();
            await stop.CancelAsync();
            await run.WaitAsync(TimeSpan.FromSeconds(20));
        }

        Directory.Delete(dir, recursive: true);
    }

    /// <summary>An SDK backend on a given path (BackendFixture picks its own).</summary>
    private sealed class BackendOnPath : IAsyncDisposable
    {
        private readonly CancellationTokenSource _stop = new();
        private readonly Task _run;

        public BackendOnPath(string path)
        {
            var backend = new VhostUserBackend(new TestDevice(), new VhostUserBackendOptions { SocketPath = path });
            _run = Task.Run(() => backend.RunAsync(_stop.Token));
        }

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            await _run.WaitAsync(TimeSpan.FromSeconds(20));
            _stop.Dispose();
        }
    }
}
