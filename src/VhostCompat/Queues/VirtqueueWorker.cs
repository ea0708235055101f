using System.Collections.Concurrent;
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
    private readonly Dictionary<ulong, Binding> _bindings = [];
    private readonly List<Binding> _polled = [];
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

    private sealed class Binding(Virtqueue queue, FileDescriptor? kick, Action<Virtqueue> handler, ulong token)
    {
        public Virtqueue Queue { get; } = queue;

        public FileDescriptor? Kick { get; set; } = kick;

        public Action<Virtqueue> Handler { get; } = handler;

        public ulong Token { get; } = token;

        /// <summary>1 while a wake-up is queued (several completions in a row cost one pass).</summary>
        public int WakePending;

        public Action? WakeCommand;
    }

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

    /// <summary>Attaches a started queue; the handler runs on this thread whenever the queue is kicked. Kick null = poll.</summary>
    public object Attach(Virtqueue queue, FileDescriptor? kick, Action<Virtqueue> handler)
    {
        Binding? binding = null;
        Invoke(() =>
        {
            binding = new Binding(queue, kick, handler, _nextToken++);
            _bindings[binding.Token] = binding;
            Binding b = binding;
            queue.SetWaker(() => Wake(b));
            Arm(binding);
            // Buffers may already be waiting (the driver kicked before the backend was ready).
            Process(binding);
        });
        return binding!;
    }

    /// <summary>From any thread: runs the queue's handler on this worker soon (no wait).</summary>
    private void Wake(Binding binding)
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

    private void Arm(Binding binding)
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

    /// <summary>Runs the device on an attached queue now (e.g. it was just enabled and buffers may be waiting).</summary>
    public void Poke(object handle)
    {
        var binding = (Binding)handle;
        Invoke(() =>
        {
            if (_bindings.ContainsKey(binding.Token))
            {
                Process(binding);
            }
        });
    }

    /// <summary>Detaches a queue; when this returns the worker will never touch it again.</summary>
    public void Detach(object handle)
    {
        var binding = (Binding)handle;
        Invoke(() =>
        {
            binding.Queue.SetWaker(null);
            if (_bindings.Remove(binding.Token))
            {
                if (binding.Kick is { } kick && !_polled.Contains(binding))
                {
                    Libc.EpollCtl(_epoll, Libc.EPOLL_CTL_DEL, kick.Value, 0, 0);
                }

                _polled.Remove(binding);
            }
        });
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
                else if (_bindings.TryGetValue(tokens[i], out Binding? b))
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

    private void Process(Binding b)
    {
        Virtqueue q = b.Queue;
        if (q.IsBroken)
        {
            return;
        }

        try
        {
            int rounds = 0;
            q.SuppressKicks();
            do
            {
                b.Handler(q);
            }
            while (!_busyPoll && q.PrepareToSleep() && ++rounds < 64);

            q.NotifyGuest();
        }
        catch (Exception ex)
        {
            // A bug in device code breaks this queue only (and stops it being retried on every kick).
            Log.SessionFault(_logger, ex, $"queue {q.Index} handler failed: {ex.Message}");
            q.MarkBroken($"queue {q.Index}: device handler threw {ex.GetType().Name}");
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
