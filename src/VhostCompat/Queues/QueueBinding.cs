using System.Runtime.InteropServices;

namespace VhostCompat.Queues;

/// <summary>
/// A queue attached to a <see cref="VirtqueueWorker"/>: the handle the control plane keeps between
/// <see cref="VirtqueueWorker.Attach"/> and <see cref="VirtqueueWorker.Detach"/>, and what the queue uses to reach
/// its worker (<see cref="Virtqueue.Wake"/>, <see cref="Virtqueue.WatchReadable"/>).
/// </summary>
internal sealed class QueueBinding(VirtqueueWorker worker, Virtqueue queue, Interop.FileDescriptor? kick,
    Action<Virtqueue> handler, Action<Virtqueue, bool>? enabledChanged, ulong token)
{
    public VirtqueueWorker Worker { get; } = worker;

    public Virtqueue Queue { get; } = queue;

    public Interop.FileDescriptor? Kick { get; } = kick;

    public Action<Virtqueue> Handler { get; } = handler;

    /// <summary>The device's enable hook, called on the worker when <see cref="Virtqueue.IsEnabled"/> differs from <see cref="ReportedEnabled"/>.</summary>
    public Action<Virtqueue, bool>? EnabledChanged { get; } = enabledChanged;

    public ulong Token { get; } = token;

    /// <summary>The enable state last reported to the device (worker thread only; starts false).</summary>
    public bool ReportedEnabled { get; set; }

    /// <summary>The external fds watched for this queue (worker thread only).</summary>
    public List<FdWatch> Watches { get; } = [];

    /// <summary>1 while a wake-up is queued (several completions in a row cost one pass).</summary>
    public int WakePending;

    /// <summary>The wake-up command, made once per binding (a wake-up allocates nothing).</summary>
    public Action? WakeCommand;

    /// <summary>False once detached: registrations made afterwards are refused.</summary>
    public volatile bool Attached = true;
}

/// <summary>
/// One external fd on a queue's worker (<see cref="Virtqueue.WatchReadable"/>). Disposing it removes the fd from
/// the worker's epoll set; when <see cref="IDisposable.Dispose"/> returns the callback is not running and will not
/// run again (unless it is called from the callback itself, which then simply is the last call).
/// </summary>
internal sealed class FdWatch(QueueBinding binding, SafeHandle handle, int fd, Action<Virtqueue> callback, ulong token) : IDisposable
{
    public QueueBinding Binding { get; } = binding;

    public SafeHandle Handle { get; } = handle;

    public int Fd { get; } = fd;

    public Action<Virtqueue> Callback { get; } = callback;

    public ulong Token { get; } = token;

    /// <summary>Set on the worker when the fd left the epoll set (its reference on the handle is released then).</summary>
    public bool Removed { get; set; }

    public void Dispose() => Binding.Worker.RemoveWatch(this);
}
