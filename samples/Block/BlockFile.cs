using Microsoft.Win32.SafeHandles;
using VhostCompat.Samples.Block.Interop;

namespace VhostCompat.Samples.Block;

/// <summary>The image's system calls, one call each: bytes transferred (0 = end of file for a read) or -errno.</summary>
internal interface IBlockFile
{
    /// <summary>One read at <paramref name="offset"/>; with <paramref name="noWait"/> EAGAIN instead of waiting for the disk.</summary>
    long Read(Span<byte> buffer, long offset, bool noWait);

    /// <summary>One write at <paramref name="offset"/>; with <paramref name="noWait"/> EAGAIN instead of waiting.</summary>
    long Write(ReadOnlySpan<byte> buffer, long offset, bool noWait);

    /// <summary>One read into several buffers (guest memory, on the worker); may be short like any read.</summary>
    long ReadVector(ReadOnlySpan<Libc.IoVec> buffers, long offset, bool noWait);
}

/// <summary>The real image: preadv2/pwritev2 on the file's descriptor, kept open (AddRef) during each call.</summary>
internal sealed class BlockFile(SafeFileHandle handle) : IBlockFile
{
    private const int EBADF = 9;

    public long Read(Span<byte> buffer, long offset, bool noWait)
    {
        bool added = false;
        try
        {
            // A closed handle (the process is stopping) fails the request instead of reaching a reused descriptor.
            handle.DangerousAddRef(ref added);
            return Libc.Read((int)handle.DangerousGetHandle(), buffer, offset, noWait ? Libc.RWF_NOWAIT : 0);
        }
        catch (ObjectDisposedException)
        {
            return -EBADF;
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    public long ReadVector(ReadOnlySpan<Libc.IoVec> buffers, long offset, bool noWait)
    {
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            return Libc.ReadVector((int)handle.DangerousGetHandle(), buffers, offset, noWait ? Libc.RWF_NOWAIT : 0);
        }
        catch (ObjectDisposedException)
        {
            return -EBADF;
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    public long Write(ReadOnlySpan<byte> buffer, long offset, bool noWait)
    {
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            return Libc.Write((int)handle.DangerousGetHandle(), buffer, offset, noWait ? Libc.RWF_NOWAIT : 0);
        }
        catch (ObjectDisposedException)
        {
            return -EBADF;
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }
}

/// <summary>Whole transfers out of single system calls: short counts continue, EINTR retries, EOF reads as zeros.</summary>
internal static class BlockTransfer
{
    /// <summary>The transfer completed (every byte read or written).</summary>
    public const int Done = 0;

    /// <summary>
    /// Reads all of <paramref name="buffer"/> from <paramref name="offset"/>. Returns <see cref="Done"/>, -EAGAIN
    /// (only with <paramref name="noWait"/>: the data is not in memory; nothing is promised about the buffer), or
    /// -errno of the failure. Bytes past the end of the file read as zeros (the disk ends where the image ends).
    /// </summary>
    public static int ReadFully(IBlockFile file, Span<byte> buffer, long offset, bool noWait)
    {
        int done = 0;
        while (done < buffer.Length)
        {
            long n = file.Read(buffer[done..], checked(offset + done), noWait);
            if (n == -Libc.EINTR)
            {
                continue;
            }

            if (n < 0)
            {
                return (int)n;
            }

            if (n == 0)
            {
                buffer[done..].Clear();
                return Done;
            }

            if (n > buffer.Length - done)
            {
                return -5; // EIO: the kernel never returns more than asked; refuse to believe it
            }

            done += (int)n;
        }

        return Done;
    }

    /// <summary>Writes all of <paramref name="buffer"/> at <paramref name="offset"/>: <see cref="Done"/>, -EAGAIN (noWait) or -errno.</summary>
    public static int WriteFully(IBlockFile file, ReadOnlySpan<byte> buffer, long offset, bool noWait)
    {
        int done = 0;
        while (done < buffer.Length)
        {
            long n = file.Write(buffer[done..], checked(offset + done), noWait);
            if (n == -Libc.EINTR)
            {
                continue;
            }

            if (n < 0)
            {
                return (int)n;
            }

            if (n == 0 || n > buffer.Length - done)
            {
                return -5; // EIO: a write that makes no progress would loop for ever
            }

            done += (int)n;
        }

        return Done;
    }
}
