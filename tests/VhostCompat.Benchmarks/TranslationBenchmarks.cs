using BenchmarkDotNet.Attributes;
using VhostCompat.Memory;

namespace VhostCompat.Benchmarks;

/// <summary>
/// <see cref="GuestMemoryTable"/> address translation: what every descriptor of every packet pays.
/// <c>Regions</c> = 1 is virtio-user/DPDK (one region), 8 is the vhost-user maximum of SET_MEM_TABLE;
/// the looked-up address lies in the LAST region (worst case of the linear scan).
/// </summary>
[MemoryDiagnoser]
public class TranslationBenchmarks
{
    private const int Ops = 1024;
    private GuestRam _ram = null!;
    private GuestMemoryTable _table = null!;
    private ulong _gpa;
    private ulong _uva;
    private ulong _spanGpa;

    [Params(1, 8)]
    public int Regions { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _ram = new GuestRam(Regions, 2 * 1024 * 1024);
        _table = _ram.Table;
        _gpa = _ram.Gpa(Regions - 1, 0x1234);
        _uva = _ram.Uva(Regions - 1, 0x1234);
        // A 2 KiB buffer crossing from the second-to-last region into the last (single region: inside it).
        _spanGpa = Regions > 1 ? _ram.Gpa(Regions - 2, _ram.RegionSize - 1024) : _ram.Gpa(0, 0x1000);
    }

    [GlobalCleanup]
    public void Cleanup() => _ram.Dispose();

    [Benchmark(OperationsPerInvoke = Ops)]
    public nint GuestPhysical()
    {
        nint sum = 0;
        for (int i = 0; i < Ops; i++)
        {
            _table.TryTranslateGuestPhysical(_gpa + (ulong)(i & 63), 64, out nint h);
            sum += h;
        }

        return sum;
    }

    [Benchmark(OperationsPerInvoke = Ops)]
    public nint FrontendVirtual()
    {
        nint sum = 0;
        for (int i = 0; i < Ops; i++)
        {
            _table.TryTranslateFrontendVirtual(_uva + (ulong)(i & 63), 64, out nint h);
            sum += h;
        }

        return sum;
    }

    [Benchmark(OperationsPerInvoke = Ops)]
    public nint GuestPhysicalMiss()
    {
        nint sum = 0;
        for (int i = 0; i < Ops; i++)
        {
            // Crosses the end of guest RAM: every region is inspected and rejected.
            _table.TryTranslateGuestPhysical(_ram.Gpa(Regions - 1, _ram.RegionSize - 8), 64, out nint h);
            sum += h;
        }

        return sum;
    }

    /// <summary>Piecewise translation (the walker's path for every buffer), 2 pieces when Regions &gt; 1.</summary>
    [Benchmark(OperationsPerInvoke = Ops)]
    public ulong GuestPhysicalPieces()
    {
        var acc = new PieceSum();
        for (int i = 0; i < Ops; i++)
        {
            _table.TryTranslateGuestPhysicalPieces(_spanGpa, 2048, ref acc, static (ref PieceSum s, nint host, ulong len) =>
            {
                s.Pieces++;
                s.Bytes += len + (ulong)host;
                return true;
            });
        }

        return acc.Bytes + (ulong)acc.Pieces;
    }

    private struct PieceSum
    {
        public int Pieces;
        public ulong Bytes;
    }
}
