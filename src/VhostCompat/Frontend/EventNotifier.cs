using VhostCompat.Interop;

namespace VhostCompat.Frontend;

/// <summary>An eventfd used as a kick, call or error notifier between a frontend and a backend.</summary>
public sealed class EventNotifier : IDisposable
{
    private readonly FileDescriptor _fd = FileDescriptor.CreateEventFd(nonBlocking: true);

    internal int Fd => _fd.Value;

    /// <summary>Signals the notifier (adds 1 to its counter).</summary>
    public void Signal()
    {
        int r = Libc.EventFdSignal(_fd.Value);
        if (r < 0)
        {
            throw new IOException(Libc.ErrorText("eventfd write", -r));
        }
    }

    /// <summary>Reads and clears the counter; returns the number of signals since the last read (0 if none).</summary>
    public long Consume()
    {
        long r = Libc.EventFdDrain(_fd.Value);
        if (r < 0)
        {
            throw new IOException(Libc.ErrorText("eventfd read", (int)-r));
        }

        return r;
    }

    /// <summary>Closes the eventfd.</summary>
    public void Dispose() => _fd.Dispose();
}
