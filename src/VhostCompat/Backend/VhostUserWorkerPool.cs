using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using VhostCompat.Queues;

namespace VhostCompat.Backend;

/// <summary>
/// Data-path threads shared by one or more backends. Queues are spread round-robin over the
/// workers; each queue is only ever processed by its worker. A device whose handler touches
/// another queue (a switch writing into another port's RX queue) should use a pool of one worker,
/// shared by all its backends, so every queue it touches runs on the same thread.
/// </summary>
public sealed class VhostUserWorkerPool : IDisposable
{
    private readonly VirtqueueWorker[] _workers;
    private int _next;

    /// <summary>Creates <paramref name="workers"/> threads; with <paramref name="busyPoll"/> they poll rings continuously (one core each) instead of waiting for kicks.</summary>
    public VhostUserWorkerPool(int workers = 1, bool busyPoll = false, ILoggerFactory? loggerFactory = null)
    {
        if (workers is < 1 or > 64)
        {
            throw new ArgumentOutOfRangeException(nameof(workers), "1..64 workers");
        }

        ILogger logger = (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger("VhostCompat.Worker");
        _workers = new VirtqueueWorker[workers];
        for (int i = 0; i < workers; i++)
        {
            _workers[i] = new VirtqueueWorker($"vhost-worker-{i}", busyPoll, logger);
        }

        BusyPoll = busyPoll;
    }

    /// <summary>True when the workers busy-poll.</summary>
    public bool BusyPoll { get; }

    /// <summary>Number of worker threads.</summary>
    public int WorkerCount => _workers.Length;

    internal VirtqueueWorker Next() => _workers[(int)((uint)Interlocked.Increment(ref _next) % (uint)_workers.Length)];

    /// <summary>Stops the worker threads. Backends using the pool must be stopped first.</summary>
    public void Dispose()
    {
        foreach (var w in _workers)
        {
            w.Dispose();
        }
    }
}
