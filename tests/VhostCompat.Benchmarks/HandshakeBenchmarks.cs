using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Engines;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using VhostCompat.Backend;
using VhostCompat.Frontend;
using VhostCompat.Protocol;
using VhostCompat.Queues;
using VhostCompat.Virtio;

namespace VhostCompat.Benchmarks;

/// <summary>
/// Connect → all rings started, the SDK's C# frontend against an in-process <see cref="VhostUserBackend"/>
/// over a real Unix socket: GET/SET_FEATURES, GET/SET_PROTOCOL_FEATURES, SET_OWNER, SET_MEM_TABLE (one
/// 256 MiB memfd), then per ring SET_VRING_NUM/BASE/ADDR/CALL/KICK/ENABLE. The measured operation ends when
/// the device's <see cref="VhostUserDevice.OnQueueStarted"/> has run for every ring (on the worker thread)
/// and <see cref="VhostUserDevice.OnQueueStateChanged"/> has reported every ring started and enabled. One operation per iteration; the disconnect and the backend's
/// teardown happen in the iteration cleanup, outside the measurement.
/// <see cref="ReplyAck"/> = true: every request carries NEED_REPLY and waits for its ack (the C# frontend's
/// behaviour once REPLY_ACK is negotiated; one round trip per message). false: no REPLY_ACK, the requests are
/// pipelined (DPDK virtio-user's behaviour) and only the device's callbacks are awaited.
/// BenchmarkDotNet's Allocated column comes out lower than the process-wide count of the `handshake` loop mode
/// (HandshakeLoop: GC.GetTotalAllocatedBytes(precise) around the operation, frontend and backend together): use that one.
/// </summary>
/// The job is in-process (the backend is in-process anyway; the out-of-process toolchain's project build timed out
/// under load): 5 warm-up and 40 measured iterations of one handshake each.
[MemoryDiagnoser]
[Config(typeof(Config))]
public class HandshakeBenchmarks
{
    private const int RingSize = 256;

    private sealed class Config : ManualConfig
    {
        public Config() => AddJob(Job.Default.WithStrategy(RunStrategy.Monitoring).WithLaunchCount(1).WithWarmupCount(5)
            .WithIterationCount(40).WithInvocationCount(1).WithUnrollFactor(1).WithToolchain(InProcessEmitToolchain.Instance).WithId("Handshake"))
            .AddColumn(StatisticColumn.Min, StatisticColumn.Median, StatisticColumn.P90);
    }

    private readonly CancellationTokenSource _stop = new();
    private HandshakeDevice _device = null!;
    private VhostUserBackend _backend = null!;
    private Task _run = null!;
    private string _dir = null!;
    private string _socket = null!;
    private GuestMemory _memory = null!;
    private EventNotifier[] _kicks = null!, _calls = null!;
    private VhostUserFrontend? _frontend;
    private SemaphoreSlim _ended = new(0);

    /// <summary>Number of virtqueues set up and started.</summary>
    [Params(2, 32)]
    public int Queues { get; set; }

    /// <summary>Negotiate REPLY_ACK (every request acked) or not (pipelined).</summary>
    [Params(true, false)]
    public bool ReplyAck { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _dir = Directory.CreateTempSubdirectory("vhc-hs-").FullName;
        _socket = Path.Combine(_dir, "be.sock");
        _device = new HandshakeDevice(Queues);
        _backend = new VhostUserBackend(_device, new VhostUserBackendOptions { SocketPath = _socket, Reconnect = true });
        _backend.SessionEnded += _ => _ended.Release();
        _run = Task.Run(() => _backend.RunAsync(_stop.Token));
        _memory = new GuestMemory(0, 256ul << 20);
        _kicks = [.. Enumerable.Range(0, Queues).Select(_ => new EventNotifier())];
        _calls = [.. Enumerable.Range(0, Queues).Select(_ => new EventNotifier())];
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (!File.Exists(_socket))
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new InvalidOperationException("backend did not listen");
            }

            Thread.Sleep(5);
        }
    }

    [IterationSetup]
    public void BeforeEach() => _device.Arm();

    /// <summary>Connect → every ring started.</summary>
    [Benchmark]
    public async Task ConnectToAllRingsStarted()
    {
        var fe = await VhostUserFrontend.ConnectAsync(_socket).ConfigureAwait(false);
        _frontend = fe;
        var protocol = VhostUserProtocolFeatures.Mq | (ReplyAck ? VhostUserProtocolFeatures.ReplyAck : 0);
        await fe.NegotiateAsync(VirtioFeatureBits.Version1, protocol).ConfigureAwait(false);
        await fe.SetMemTableAsync([_memory]).ConfigureAwait(false);
        for (int q = 0; q < Queues; q++)
        {
            ulong ring = (ulong)q * 0x4000; // desc 4 KiB, avail, used on the next 4 KiB boundaries
            await fe.SetVringNumAsync(q, RingSize).ConfigureAwait(false);
            await fe.SetVringBaseAsync(q, 0).ConfigureAwait(false);
            await fe.SetVringAddrAsync(q, _memory.ToFrontendAddress(ring), _memory.ToFrontendAddress(ring + 0x2000), _memory.ToFrontendAddress(ring + 0x1000)).ConfigureAwait(false);
            await fe.SetVringCallAsync(q, _calls[q]).ConfigureAwait(false);
            await fe.SetVringKickAsync(q, _kicks[q]).ConfigureAwait(false);
            await fe.SetVringEnableAsync(q, true).ConfigureAwait(false);
        }

        await _device.AllStarted.ConfigureAwait(false);
    }

    [IterationCleanup]
    public void AfterEach()
    {
        _frontend?.DisposeAsync().AsTask().GetAwaiter().GetResult();
        _frontend = null;
        if (!_ended.Wait(TimeSpan.FromSeconds(10)))
        {
            throw new InvalidOperationException("backend session did not end");
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _stop.Cancel();
        try
        {
            _run.Wait(TimeSpan.FromSeconds(10));
        }
        catch (AggregateException)
        {
        }

        foreach (var e in _kicks.Concat(_calls))
        {
            e.Dispose();
        }

        _memory.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    /// <summary>A net-typed device with N queues that reports when all of them have started.</summary>
    internal sealed class HandshakeDevice(int queues) : VhostUserDevice
    {
        private readonly object _lock = new();
        private int _started, _enabled;
        private TaskCompletionSource _all = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public override VirtioDeviceType DeviceType => VirtioDeviceType.Net;

        public override ulong DeviceFeatures => VirtioFeatureBits.Version1;

        public override int QueueCount => queues;

        public override ulong QueueNumReply => (ulong)(queues / 2);

        /// <summary>Completes when OnQueueStarted has run for every ring and every started ring has been enabled.</summary>
        public Task AllStarted => _all.Task;

        public void Arm()
        {
            lock (_lock)
            {
                _started = 0;
                _enabled = 0;
                _all = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            }
        }

        public override void OnQueueStarted(Virtqueue queue) => Count(ref _started);

        public override void OnQueueStateChanged(VirtqueueInfo queue)
        {
            if (queue.Started && queue.Enabled)
            {
                Count(ref _enabled);
            }
        }

        private void Count(ref int counter)
        {
            lock (_lock)
            {
                counter++;
                if (_started == queues && _enabled == queues)
                {
                    _all.TrySetResult();
                }
            }
        }
    }
}
