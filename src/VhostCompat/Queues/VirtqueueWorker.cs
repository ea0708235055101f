using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using VhostCompat.Interop;

namespace VhostCompat.Queues;

/// <summary>
/// One data-path thread. It owns every queue attached to it: only this thread touches their rings,
/// and the control plane changes a queue (attach, detach, new memory, new notifier) by posting a
/// command and waiting for it. A detached queue and a replaced memory table are therefore never
/// used again once the command returns, so the control plane can unmap safely. Kicks are waited
/// for with epoll; in busy-poll mode every attached queue is polled continuously instead.
/// </summary>
internal sealed class VirtqueueWorker : IDisposable
{
    private const ulong CommandToken = ulong.MaxValue;
    private readonly int _epoll;
    private readonly FileDescriptor _commandEvent = FileDescriptor.CreateEventFd(nonBlocking: true);
    private readonly ConcurrentQueue<(Action Action, ManualResetEventSlim? Done)> _commands = new();
    private readonly Dictionary<ulong, QueueBinding> _bindings = [];
    private readonly Dictionary<ulong, FdWatch> _watches = [];
    private readonly List<QueueBinding> _polled = [];
    private readonly Thread _thread;
    private readonly ILogger _logger;
    private readonly bool _busyPoll;
    private ulong _nextToken = 1;
    private volatile bool _stopping;

    public VirtqueueWorker(string name, bool busyPoll, ILogger logger)
    {
        _busyPoll = busyPoll;
        _logger = logger;
        _epoll = Libc.EpollCreate1(Libc.EPOLL_CLOEXEC);
        if (_epoll < 0)
        {
            throw new IOException(Libc.ErrorText("epoll_create1", System.Runtime.InteropServices.Marshal.GetLastPInvokeError()));
        }

        int r = Libc.EpollCtl(_epoll, Libc.EPOLL_CTL_ADD, _commandEvent.Value, Libc.EPOLLIN, CommandToken);
        if (r < 0)
        {
            throw new IOException(Libc.ErrorText("epoll_ctl", -r));
        }

        _thread = new Thread(Run) { IsBackground = true, Name = name };
        _thread.Start();
    }

    public int QueueCount => _bindings.Count;

    /// <summary>Runs <paramref name="action"/> on the worker thread and waits for it (at most 10 s).</summary>
    public void Invoke(Action action)
    {
        if (Thread.CurrentThread == _thread)
        {
            action();
            return;
        }

        using var done = new ManualResetEventSlim();
        _commands.Enqueue((action, done));
        Libc.EventFdSignal(_commandEvent.Value);
        if (!done.Wait(TimeSpan.FromSeconds(10)))
        {
            throw new TimeoutException("the virtqueue worker did not answer within 10 s (a device handler is blocking it)");
        }
    }

    /// <summary>
    /// Attaches a started queue; the handler runs on this thread whenever the queue is kicked. Kick null = poll.
    /// <paramref name="enabledChanged"/> (the device's <c>OnQueueEnabledChanged</c>) is called on this thread before
    /// the handler whenever the queue's enable state differs from the one last reported (first with true when the
    /// queue starts enabled); <see cref="Poke"/> after <c>SetEnabled</c> makes a change reach it at once.
    /// </summary>
    public QueueBinding Attach(Virtqueue queue, FileDescriptor? kick, Action<Virtqueue> handler, Action<Virtqueue, bool>? enabledChanged = null,
        Action<Virtqueue>? started = null)
    {
        QueueBinding? binding = null;
        // One round trip to the worker per ring start: the device's start callback, the registration and the first look.
        Invoke(() =>
        {
            RunDeviceCallback(started, queue); // a throwing callback is logged; the queue is attached all the same
            binding = new QueueBinding(this, queue, kick, handler, enabledChanged, _nextToken++);
            _bindings[binding.Token] = binding;
            queue.SetBinding(binding);
            Arm(binding);
            // Buffers may already be waiting (the driver kicked before the backend was ready).
            Process(binding);
        });
        return binding!;
    }

    /// <summary>From any thread: runs the queue's handler on this worker soon (no wait).</summary>
    internal void Wake(QueueBinding binding)
    {
        if (Interlocked.Exchange(ref binding.WakePending, 1) == 1)
        {
            return;
        }

        // One delegate per binding, not one per wake-up: asynchronous completions allocate nothing.
        _commands.Enqueue((binding.WakeCommand ??= () =>
        {
            Volatile.Write(ref binding.WakePending, 0);
            if (_bindings.ContainsKey(binding.Token))
            {
                Process(binding);
            }
        }, null));
        Libc.EventFdSignal(_commandEvent.Value);
    }

    private void Arm(QueueBinding binding)
    {
        if (binding.Kick is { } kick && !_busyPoll)
        {
            int r = Libc.EpollCtl(_epoll, Libc.EPOLL_CTL_ADD, kick.Value, Libc.EPOLLIN, binding.Token);
            if (r < 0)
            {
                Log.QueueCannotStart(_logger, binding.Queue.Index, Libc.ErrorText("epoll_ctl", -r));
                _polled.Add(binding);
            }
        }
        else
        {
            _polled.Add(binding);
        }
    }

    /// <summary>
    /// Runs the device on an attached queue now: reports an enable change (<c>OnQueueEnabledChanged</c>), then
    /// the handler (the ring was just enabled and buffers may be waiting).
    /// </summary>
    public void Poke(QueueBinding binding)
    {
        Invoke(() =>
        {
            if (_bindings.ContainsKey(binding.Token))
            {
                Process(binding);
            }
        });
    }

    /// <summary>Detaches a queue and drops its fd watches; when this returns the worker will never touch it again.</summary>
    public void Detach(QueueBinding binding, Action<Virtqueue>? stopped = null)
    {
        // One round trip per ring stop: after the registration is gone, the device's stop callback.
        Invoke(() =>
        {
            binding.Attached = false;
            binding.Queue.SetBinding(null);
            foreach (FdWatch watch in binding.Watches.ToArray())
            {
                Unwatch(watch);
            }

            if (_bindings.Remove(binding.Token))
            {
                if (binding.Kick is { } kick && !_polled.Contains(binding))
                {
                    Libc.EpollCtl(_epoll, Libc.EPOLL_CTL_DEL, kick.Value, 0, 0);
                }

                _polled.Remove(binding);
            }

            RunDeviceCallback(stopped, binding.Queue);
        });
    }

    private void RunDeviceCallback(Action<Virtqueue>? callback, Virtqueue queue)
    {
        try
        {
            callback?.Invoke(queue);
        }
        catch (Exception ex)
        {
            Log.SessionFault(_logger, ex, ex.Message);
        }
    }

    /// <summary>Adds <paramref name="handle"/> to the epoll set for <paramref name="binding"/>'s queue (any thread; waits).</summary>
    internal FdWatch AddWatch(QueueBinding binding, SafeHandle handle, Action<Virtqueue> callback)
    {
        FdWatch? watch = null;
        string? error = null;
        Invoke(() =>
        {
            if (!binding.Attached)
            {
                error = "the queue has stopped";
                return;
            }

            bool added = false;
            handle.DangerousAddRef(ref added);
            int fd = (int)handle.DangerousGetHandle();
            var w = new FdWatch(binding, handle, fd, callback, _nextToken++);
            int r = Libc.EpollCtl(_epoll, Libc.EPOLL_CTL_ADD, fd, Libc.EPOLLIN, w.Token);
            if (r < 0)
            {
                handle.DangerousRelease();
                error = Libc.ErrorText("epoll_ctl", -r);
                return;
            }

            _watches[w.Token] = w;
            binding.Watches.Add(w);
            watch = w;
        });
        return watch ?? throw (error == "the queue has stopped"
            ? new InvalidOperationException("the queue has stopped; watch fds from OnQueueStarted or a later callback")
            : new IOException($"cannot watch the fd: {error}"));
    }

    /// <summary>Removes a watch (any thread; waits unless called on the worker).</summary>
    internal void RemoveWatch(FdWatch watch) => Invoke(() => Unwatch(watch));

    private void Unwatch(FdWatch watch)
    {
        if (watch.Removed)
        {
            return;
        }

        watch.Removed = true;
        Libc.EpollCtl(_epoll, Libc.EPOLL_CTL_DEL, watch.Fd, 0, 0);
        _watches.Remove(watch.Token);
        watch.Binding.Watches.Remove(watch);
        watch.Handle.DangerousRelease();
    }

    private void Fire(FdWatch watch, uint events)
    {
        Virtqueue q = watch.Binding.Queue;
        try
        {
            if (!q.IsBroken)
            {
                watch.Callback(q);
                q.NotifyGuest();
            }
        }
        catch (Exception ex)
        {
            Log.SessionFault(_logger, ex, $"queue {q.Index} fd callback failed: {ex.Message}");
            q.MarkBroken($"queue {q.Index}: device fd callback threw {ex.GetType().Name}");
        }

        // A level-triggered hang-up or error would fire forever: the watch ends with it (the callback saw it last).
        if ((events & (Libc.EPOLLHUP | Libc.EPOLLERR)) != 0 || q.IsBroken)
        {
            Unwatch(watch);
        }
    }

    private void Run()
    {
        Span<ulong> tokens = stackalloc ulong[64];
        Span<uint> events = stackalloc uint[64];
        while (!_stopping)
        {
            int timeout = _busyPoll ? 0 : _polled.Count > 0 ? 1 : -1;
            int n = Libc.EpollWait(_epoll, tokens, events, timeout);
            for (int i = 0; i < n; i++)
            {
                if (tokens[i] == CommandToken)
                {
                    Libc.EventFdDrain(_commandEvent.Value);
                    RunCommands();
                }
                else if (_watches.TryGetValue(tokens[i], out FdWatch? w))
                {
                    Fire(w, events[i]);
                }
                else if (_bindings.TryGetValue(tokens[i], out QueueBinding? b))
                {
                    if (b.Kick is { } kick)
                    {
                        Libc.EventFdDrain(kick.Value);
                    }

                    Process(b);
                }
            }

            if (_busyPoll && n == 0 && !_commands.IsEmpty)
            {
                RunCommands();
            }

            for (int i = 0; i < _polled.Count; i++)
            {
                Process(_polled[i]);
            }
        }

        RunCommands();
    }

    private void RunCommands()
    {
        while (_commands.TryDequeue(out var command))
        {
            try
            {
                command.Action();
            }
            catch (Exception ex)
            {
                Log.SessionFault(_logger, ex, ex.Message);
            }
            finally
            {
                command.Done?.Set();
            }
        }
    }

    private void Process(QueueBinding b)
    {
        Virtqueue q = b.Queue;
        if (q.IsBroken)
        {
            return;
        }

        try
        {
            bool enabled = q.IsEnabled;
            if (enabled != b.ReportedEnabled)
            {
                b.ReportedEnabled = enabled;
                b.EnabledChanged?.Invoke(q, enabled);
            }

            int rounds = 0;
            long popped;
            bool more;
            bool waiting;
            do
            {
                q.SuppressKicks(); // again each round: PrepareToSleep turned kicks back on before its re-check
                popped = q.PoppedChains;
                waiting = q.HasAvailable();
                RunPass(b);

                // Buffers that arrived while the handler ran get another round; buffers the handler left on the ring
                // (nothing popped this round: it has no use for them yet) do not: it takes them on a later kick or Wake.
                more = !_busyPoll && q.PoppedChains != popped && q.PrepareToSleep();
            }
            while (more && ++rounds < MaxRounds);

            if (!_busyPoll && q.PoppedChains == popped && q.PrepareToSleep() && !waiting)
            {
                // The ring was empty when the handler looked and is not now: the driver added a chain while kicks were
                // off, and will not kick for it. Kicks are on again; one more look. (A ring that already held chains the
                // handler left, as an RX queue without frames does, gets no second call: it takes them on a later kick.)
                RunPass(b);
            }

            q.NotifyGuest();
            if (more)
            {
                // The driver added buffers while kicks were off and will not kick for them: come back after the others.
                Wake(b);
            }
        }
        catch (Exception ex)
        {
            // A bug in device code breaks this queue only (and stops it being retried on every kick).
            Log.SessionFault(_logger, ex, $"queue {q.Index} handler failed: {ex.Message}");
            q.MarkBroken($"queue {q.Index}: device handler threw {ex.GetType().Name}");
        }
    }

    // Handler rounds in one go before the worker turns to its other queues and commands.
    private const int MaxRounds = 64;

    /// <summary>One call of the device's handler; what it pushes becomes visible to the driver when it returns.</summary>
    private static void RunPass(QueueBinding b)
    {
        Virtqueue q = b.Queue;
        q.SetHandlerPass(true);
        try
        {
            b.Handler(q);
        }
        finally
        {
            q.SetHandlerPass(false);
        }
    }

    public void Dispose()
    {
        _stopping = true;
        Libc.EventFdSignal(_commandEvent.Value);
        if (Thread.CurrentThread != _thread)
        {
            _thread.Join(TimeSpan.FromSeconds(10));
        }

        Libc.Close(_epoll);
        _commandEvent.Dispose();
    }
}
