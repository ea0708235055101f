using BenchmarkDotNet.Attributes;
using VhostCompat.Queues;

namespace VhostCompat.Benchmarks;

/// <summary>
/// SDK split-ring walker vs <see cref="LeanSplitQueue"/> (an experiment with the changes suggested in
/// docs/performance.md), same ring, same chains, bursts of 32, per-chain figures.
/// </summary>
[MemoryDiagnoser]
public class WalkerExperimentBenchmarks
{
    private const int Ops = 1024;
    private const int Burst = 32;
    private SplitRing _ring = null!;
    private Virtqueue _sdk = null!;
    private LeanSplitQueue _lean = null!;

    [Params(ChainShape.OneDesc, ChainShape.TwoDesc, ChainShape.Indirect2)]
    public ChainShape Shape { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _ring = new SplitRing(256, Shape);
        _sdk = _ring.Queue;
        _lean = new LeanSplitQueue(_ring);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        if (_sdk.IsBroken || _lean.BrokenReason is not null)
        {
            throw new InvalidOperationException($"broken: {_sdk.BrokenReason} {_lean.BrokenReason}");
        }

        _ring.Dispose();
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Ops)]
    public int Sdk()
    {
        int n = 0;
        for (int b = 0; b < Ops / Burst; b++)
        {
            _ring.Publish(Burst);
            while (_sdk.TryPop(out DescriptorChain? c))
            {
                _sdk.Push(c, 0);
                n++;
            }

            _sdk.NotifyGuest();
        }

        return n;
    }

    [Benchmark(OperationsPerInvoke = Ops)]
    public int Lean()
    {
        int n = 0;
        for (int b = 0; b < Ops / Burst; b++)
        {
            _ring.Publish(Burst);
            while (_lean.TryPop(out DescriptorChain? c))
            {
                _lean.Push(c, 0);
                n++;
            }

            _lean.Flush();
        }

        return n;
    }
}
