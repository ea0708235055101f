using VhostCompat.Interop;
using VhostCompat.Memory;
using VhostCompat.Protocol;

namespace VhostCompat.Benchmarks;

/// <summary>
/// Fake guest RAM for the benchmarks: one memfd per region, mapped with the SDK's own
/// <see cref="GuestMemoryRegion.TryMap"/> and gathered in a <see cref="GuestMemoryTable"/>, exactly as
/// SET_MEM_TABLE does. Regions are laid out back to back in guest-physical space (so ranges can span
/// two of them) and at a different, also contiguous, frontend-virtual base (like virtio-user / QEMU).
/// </summary>
internal sealed class GuestRam : IDisposable
{
    public const ulong GuestPhysicalBase = 0x1_0000_0000;
    public const ulong FrontendVirtualBase = 0x7f00_0000_0000;

    private readonly FileDescriptor[] _fds;

    public GuestRam(int regions, ulong regionSize)
    {
        RegionSize = regionSize;
        _fds = new FileDescriptor[regions];
        var mapped = new GuestMemoryRegion[regions];
        for (int i = 0; i < regions; i++)
        {
            _fds[i] = FileDescriptor.CreateMemfd($"vhc-bench-{Environment.ProcessId}-{i}", (long)regionSize);
            var d = new MemoryRegionPayload(
                GuestPhysicalBase + ((ulong)i * regionSize),
                regionSize,
                FrontendVirtualBase + ((ulong)i * regionSize),
                0);
            mapped[i] = GuestMemoryRegion.TryMap(d, _fds[i], out string error)
                ?? throw new InvalidOperationException($"region {i}: {error}");
        }

        Table = new GuestMemoryTable(mapped);
    }

    public GuestMemoryTable Table { get; }

    public ulong RegionSize { get; }

    public ulong Gpa(int region, ulong offset) => GuestPhysicalBase + ((ulong)region * RegionSize) + offset;

    public ulong Uva(int region, ulong offset) => FrontendVirtualBase + ((ulong)region * RegionSize) + offset;

    /// <summary>Host pointer of a guest-physical address (the benchmark's "driver" writes rings through it).</summary>
    public unsafe byte* Host(ulong gpa) =>
        Table.TryTranslateGuestPhysical(gpa, 1, out nint h) ? (byte*)h : throw new ArgumentOutOfRangeException(nameof(gpa));

    public void Dispose()
    {
        Table.Release(); // unmaps every region (the table holds the only reference)
        foreach (var fd in _fds)
        {
            fd.Dispose();
        }
    }
}
