using BenchmarkDotNet.Attributes;
using VhostCompat.Queues;

namespace VhostCompat.Benchmarks;

/// <summary>
/// The split-ring walker: the driver makes a chain available, the device pops it (index checks,
/// descriptor walk, per-buffer translation into the chain's segment list) and pushes it back to the
/// used ring. Figures are per chain. The steady state must allocate nothing (chains are pooled).
/// </summary>
[MemoryDiagnoser]
public class SplitRingBenchmarks
{
    private const int Ops = 1024;
    private const int Burst = 32;
    private SplitRing _ring = null!;
    private Virtqueue _queue = null!;
    private readonly byte[] _frame = new byte[2048];

    [Params(ChainShape.OneDesc, ChainShape.TwoDesc, ChainShape.TwoDescRW, ChainShape.Indirect2)]
    public ChainShape Shape { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _ring = new SplitRing(256, Shape);
        _queue = _ring.Queue;
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        if (_queue.IsBroken)
        {
            throw new InvalidOperationException($"queue broke during the benchmark: {_queue.BrokenReason}");
        }

        _ring.Dispose();
    }

    /// <summary>One chain at a time: publish 1, pop 1, push 1.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = Ops)]
    public int PopPush()
    {
        int n = 0;
        for (int i = 0; i < Ops; i++)
        {
            _ring.Publish(1);
            if (_queue.TryPop(out DescriptorChain? c))
            {
                _queue.Push(c, 0);
                n++;
            }
        }

        return n;
    }

    /// <summary>Bursts of 32 (testpmd's default burst): publish 32, pop/push until empty, one NotifyGuest.</summary>
    [Benchmark(OperationsPerInvoke = Ops)]
    public int PopPushBurst32()
    {
        int n = 0;
        for (int b = 0; b < Ops / Burst; b++)
        {
            _ring.Publish(Burst);
            while (_queue.TryPop(out DescriptorChain? c))
            {
                _queue.Push(c, 0);
                n++;
            }

            _queue.NotifyGuest();
        }

        return n;
    }

    /// <summary>Like <see cref="PopPushBurst32"/> but also copies the readable bytes out (samples/Net without --sink).</summary>
    [Benchmark(OperationsPerInvoke = Ops)]
    public int PopReadPushBurst32()
    {
        int n = 0;
        for (int b = 0; b < Ops / Burst; b++)
        {
            _ring.Publish(Burst);
            while (_queue.TryPop(out DescriptorChain? c))
            {
                n += c.ReadReadable(0, _frame.AsSpan(0, c.ReadableLength));
                _queue.Push(c, 0);
            }

            _queue.NotifyGuest();
        }

        return n;
    }
}
