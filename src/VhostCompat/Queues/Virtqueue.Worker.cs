using System.Runtime.InteropServices;

namespace VhostCompat.Queues;

// The queue's link to its worker thread: wake-ups, external fds, and what the worker reads between handler rounds.
public abstract partial class Virtqueue
{
    private QueueBinding? _binding;

    /// <summary>
    /// Asks the queue's worker to run the device's <c>OnQueueKicked</c> for this queue soon, as if the driver had
    /// kicked. Thread-safe: the way for work finished elsewhere (asynchronous I/O) to get back onto the worker,
    /// where chains are pushed. Does nothing once the queue has stopped.
    /// </summary>
    public void Wake()
    {
        if (Volatile.Read(ref _binding) is { } b)
        {
            b.Worker.Wake(b);
        }
        else
        {
            Volatile.Read(ref _detachedWaker)?.Invoke();
        }
    }

    private Action? _detachedWaker;

    /// <summary>What <see cref="Wake"/> does for a queue on no worker (a queue driven by hand, as unit tests do).</summary>
    internal void SetWaker(Action? waker) => Volatile.Write(ref _detachedWaker, waker);

    /// <summary>
    /// Puts an external fd (a host evdev node, a timerfd, a socket, an eventfd) on this queue's worker:
    /// <paramref name="onReadable"/> runs on the worker thread — where this queue's chains may be used — whenever
    /// the fd is readable (level-triggered: read until it would block, or it fires again), and the SDK notifies the
    /// guest afterwards. The watch ends when the returned object is disposed (from any thread; after
    /// <c>Dispose</c> returns the callback does not run again), when the fd reports hang-up or an error (after one
    /// last call), and when the queue stops (before <c>OnQueueStopped</c>). The caller keeps ownership of
    /// <paramref name="fd"/>; the SDK holds a reference on it while it is watched. An exception from the callback
    /// breaks this queue, as one from <c>OnQueueKicked</c> does. Call it from <c>OnQueueStarted</c> or later.
    /// </summary>
    /// <exception cref="InvalidOperationException">The queue is not running (before start or after stop).</exception>
    /// <exception cref="IOException">epoll refused the fd (e.g. a regular file).</exception>
    public IDisposable WatchReadable(SafeHandle fd, Action<Virtqueue> onReadable)
    {
        ArgumentNullException.ThrowIfNull(fd);
        ArgumentNullException.ThrowIfNull(onReadable);
        QueueBinding binding = Volatile.Read(ref _binding)
            ?? throw new InvalidOperationException("the queue is not running; watch fds from OnQueueStarted or a later callback");
        return binding.Worker.AddWatch(binding, fd, onReadable);
    }

    internal void SetBinding(QueueBinding? binding) => Volatile.Write(ref _binding, binding);

    /// <summary>Chains popped since the queue started (the worker compares it across handler rounds).</summary>
    internal long PoppedChains { get; private set; }

    /// <summary>
    /// True while the worker runs the device's handler for this queue: used elements pushed then may be made visible
    /// to the driver together (<see cref="PublishUsed"/>), as a driver polling the used index pays for every store
    /// to it. Pushes at any other time (to another queue, from a timer) are visible when <c>Push</c> returns.
    /// </summary>
    private protected bool InHandlerPass { get; private set; }

    /// <summary>The worker: a handler pass begins (true) or ends (false, after publishing what it pushed).</summary>
    internal void SetHandlerPass(bool running)
    {
        if (!running)
        {
            PublishUsed();
        }

        InHandlerPass = running;
    }

    /// <summary>Makes every pushed element visible to the driver (split rings publish the used index; packed rings need nothing).</summary>
    internal virtual void PublishUsed()
    {
    }
}
