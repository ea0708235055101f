using VhostCompat.Interop;

namespace VhostCompat.Proxy;

/// <summary>One fd of a traced message: its number in this process, its type and what is known about it.</summary>
/// <param name="Fd">The raw fd number (the proxy's, not the sender's).</param>
/// <param name="Type"><c>memfd</c>, <c>eventfd</c>, <c>socket</c>, <c>file</c>, <c>hugetlbfs</c>, <c>other</c> or <c>invalid</c>.</param>
/// <param name="Details">Type-specific fields: memfd name/size/seals, file path/size, the link target of other kinds, errno.</param>
internal readonly record struct TraceFd(int Fd, string Type, IReadOnlyList<TraceField> Details)
{
    /// <summary>Inspects every fd (fstat, fstatfs, seals, /proc/self/fd); never throws, never closes or changes an fd.</summary>
    public static TraceFd[] Describe(ReadOnlySpan<int> fds)
    {
        if (fds.IsEmpty)
        {
            return [];
        }

        var result = new TraceFd[fds.Length];
        for (int i = 0; i < fds.Length; i++)
        {
            result[i] = Describe(fds[i], FileDescriptorInfo.Inspect(fds[i]));
        }

        return result;
    }

    /// <summary>The trace form of an inspected fd.</summary>
    public static TraceFd Describe(int fd, FileDescriptorInfo info)
    {
        var d = new List<TraceField>(4);
        string type;
        switch (info.Kind)
        {
            case FileDescriptorKind.Memfd:
                type = "memfd";
                d.Add(TraceField.Str("name", info.MemfdName ?? string.Empty));
                d.Add(TraceField.Num("size", (ulong)info.Size));
                if (info.Seals >= 0)
                {
                    d.Add(TraceField.Bits("seals", (ulong)info.Seals, TracePayload.SealBits(info.Seals)));
                }

                if (info.OnHugetlbfs)
                {
                    d.Add(TraceField.Bool("hugetlb", true));
                }

                break;
            case FileDescriptorKind.EventFd:
                type = "eventfd";
                break;
            case FileDescriptorKind.Socket:
                type = "socket";
                AddTarget(d, info);
                break;
            case FileDescriptorKind.RegularFile:
                type = "file";
                d.Add(TraceField.Str("path", info.Target ?? string.Empty));
                d.Add(TraceField.Num("size", (ulong)info.Size));
                break;
            case FileDescriptorKind.Hugetlbfs:
                type = "hugetlbfs";
                d.Add(TraceField.Str("path", info.Target ?? string.Empty));
                d.Add(TraceField.Num("size", (ulong)info.Size));
                break;
            case FileDescriptorKind.Invalid:
                type = "invalid";
                d.Add(TraceField.Num("errno", (ulong)info.Errno));
                break;
            default:
                type = "other";
                AddTarget(d, info);
                break;
        }

        return new TraceFd(fd, type, d);
    }

    private static void AddTarget(List<TraceField> d, FileDescriptorInfo info)
    {
        if (info.Target is not null)
        {
            d.Add(TraceField.Str("target", info.Target));
        }
    }
}
