namespace VhostCompat.Compat;

/// <summary>Crash-safe replacement of a small file: temp file in the same directory, write, fsync, rename.</summary>
internal static class AtomicFile
{
    /// <summary>
    /// Replaces <paramref name="path"/> with <paramref name="content"/> so that a crash at any point
    /// leaves either the old or the new content. <paramref name="beforeRename"/> is a test hook
    /// called after the temp file is durable and before it replaces the target.
    /// </summary>
    public static void Write(string path, ReadOnlySpan<byte> content, Action<string>? beforeRename = null)
    {
        string full = Path.GetFullPath(path);
        string dir = Path.GetDirectoryName(full) ?? throw new ArgumentException($"{path} has no directory", nameof(path));
        string tmp = Path.Combine(dir, $".{Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.None))
            {
                fs.Write(content);
                fs.Flush(flushToDisk: true);
            }

            beforeRename?.Invoke(tmp);
            File.Move(tmp, full, overwrite: true);

            // fsync the directory so the rename itself is durable across a power cut.
            int synced = Interop.Libc.FsyncDirectory(Path.GetDirectoryName(full)!);
            if (synced < 0)
            {
                throw new IOException(Interop.Libc.ErrorText("fsync(directory)", -synced));
            }
        }
        catch
        {
            try
            {
                File.Delete(tmp);
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }

            throw;
        }
    }
}
