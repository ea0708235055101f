namespace VhostCompat.Interop;

/// <summary>What protects a mapped frontend file against being shrunk under the mapping (an access beyond a file's end raises SIGBUS, which .NET cannot catch).</summary>
internal enum FileSealing
{
    /// <summary>The frontend sealed it against shrinking (QEMU's memory-backend-memfd does by default).</summary>
    SealedByFrontend,

    /// <summary>The backend added F_SEAL_SHRINK to a sealable memfd when it mapped it.</summary>
    SealedByBackend,

    /// <summary>
    /// A file that cannot carry seals, or a shmem file (tmpfs, hugetlbfs) whose sealing is itself sealed: nothing
    /// stops the frontend from truncating it. Accepted unless sealed memory is required; the residual risk is documented.
    /// </summary>
    Unsealable,
}

/// <summary>Adds F_SEAL_SHRINK to frontend files before they are mapped, and decides which unsealable files are refused.</summary>
internal static class FrontendFileSeals
{
    /// <summary>
    /// Makes sure <paramref name="fd"/> cannot shrink from now on, before its size is checked (sealing first closes the
    /// race with a concurrent truncate). Files that cannot be sealed are refused when <paramref name="requireSealed"/> is
    /// set, and accepted as <see cref="FileSealing.Unsealable"/> otherwise: among them is a memfd created without
    /// MFD_ALLOW_SEALING (seals = F_SEAL_SEAL), which is what DPDK 22.11's virtio-user sends with <c>--no-huge</c>
    /// ("/memfd:nohuge", seals 0x1, checked on this project's machines), so refusing it by default would refuse DPDK.
    /// Returns false and a reason naming <paramref name="what"/>.
    /// </summary>
    public static bool TrySecure(FileDescriptor fd, string what, bool requireSealed, out FileSealing sealing, out string error)
    {
        error = string.Empty;
        int seals = Libc.GetSeals(fd.Value, out int errno);
        if (seals >= 0 && (seals & Libc.F_SEAL_SHRINK) != 0)
        {
            sealing = FileSealing.SealedByFrontend;
            return true;
        }

        if (seals >= 0 && (seals & Libc.F_SEAL_SEAL) == 0)
        {
            if (Libc.TryAddSeals(fd.Value, Libc.F_SEAL_SHRINK, out errno))
            {
                sealing = FileSealing.SealedByBackend;
                return true;
            }

            error = $"{what} fd is a sealable memfd but F_SEAL_SHRINK could not be added ({Libc.ErrorText("fcntl(F_ADD_SEALS)", errno).TrimEnd()})";
            sealing = FileSealing.Unsealable;
            return false;
        }

        sealing = FileSealing.Unsealable;
        if (!requireSealed)
        {
            return true;
        }

        bool memfd = seals >= 0 && Libc.FdTarget(fd.Value) is { } target && target.StartsWith("/memfd:", StringComparison.Ordinal);
        error = seals < 0
            ? $"{what} fd does not support seals ({Libc.ErrorText("fcntl(F_GET_SEALS)", errno).TrimEnd()}) and sealed memory is required"
            : memfd
                ? $"{what} fd is a memfd that cannot be sealed against shrinking (seals 0x{seals:x}: created without MFD_ALLOW_SEALING) and sealed memory is required"
                : $"{what} fd is a file that cannot be sealed against shrinking (seals 0x{seals:x}) and sealed memory is required";
        return false;
    }
}
