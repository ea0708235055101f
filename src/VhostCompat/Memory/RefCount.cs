namespace VhostCompat.Memory;

/// <summary>
/// The reference count shared by memory tables, regions and dirty logs: starts at 1 (the creator's
/// reference); once it reaches 0 it can never be acquired again, so a released mapping is never reused.
/// </summary>
internal struct RefCount
{
    private int _count;

    public RefCount() => _count = 1;

    /// <summary>Takes a reference; false if the object is already fully released.</summary>
    public bool TryAcquire()
    {
        int current;
        do
        {
            current = Volatile.Read(ref _count);
            if (current == 0)
            {
                return false;
            }
        }
        while (Interlocked.CompareExchange(ref _count, current + 1, current) != current);
        return true;
    }

    /// <summary>Adds a reference the caller knows is still held elsewhere.</summary>
    public void Add() => Interlocked.Increment(ref _count);

    /// <summary>Drops a reference; true when it was the last one (the caller then frees the resource).</summary>
    public bool Release() => Interlocked.Decrement(ref _count) == 0;
}
