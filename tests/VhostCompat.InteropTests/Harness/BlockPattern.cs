using System.Text;
using Microsoft.Win32.SafeHandles;

namespace VhostCompat.InteropTests.Harness;

/// <summary>
/// The 4 KiB verify blocks the guest tool scripts/blkpattern.c writes, computed the same way here so the test can
/// check the disk image on the host: bytes 0..63 "VHOSTCOMPAT-BLK tag=TAG off=OFF\n" NUL padded, byte i >= 64 is
/// (i * 7 + (off / 512) * 13 + 0x5a) mod 256.
/// </summary>
public static class BlockPattern
{
    public const int BlockSize = 4096;

    public static byte[] Expected(string tag, long offset)
    {
        ArgumentNullException.ThrowIfNull(tag);
        var b = new byte[BlockSize];
        var header = Encoding.ASCII.GetBytes($"VHOSTCOMPAT-BLK tag={tag} off={offset.ToString(System.Globalization.CultureInfo.InvariantCulture)}\n");
        header.AsSpan(0, Math.Min(header.Length, 63)).CopyTo(b);
        var sector = offset / 512;
        for (var i = 64; i < BlockSize; i++)
        {
            b[i] = unchecked((byte)((i * 7) + (sector * 13) + 0x5a));
        }

        return b;
    }

    /// <summary>
    /// Offsets (multiples of 512, non-overlapping) for a disk of <paramref name="sizeBytes"/>: the first block, one
    /// that is sector- but not 4 KiB-aligned, one past 16 MiB, one in the middle and the last 4 KiB (the last sector).
    /// </summary>
    public static IReadOnlyList<long> OffsetsFor(long sizeBytes)
    {
        const long MiB = 1 << 20;
        if (sizeBytes < 32 * MiB || sizeBytes % 4096 != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(sizeBytes), "the disk must be >= 32 MiB and a multiple of 4 KiB");
        }

        return [0, MiB + 3584, (17 * MiB) + 4096, (sizeBytes / 2) + (77 * 4096), sizeBytes - BlockSize];
    }

    /// <summary>Offsets whose block in <paramref name="imagePath"/> differs from the pattern, with a short reason each.</summary>
    public static IReadOnlyList<string> Mismatches(string imagePath, string tag, IEnumerable<long> offsets)
    {
        ArgumentNullException.ThrowIfNull(offsets);
        var bad = new List<string>();
        // The backend keeps the image open for writing; share it and only read.
        using SafeFileHandle h = File.OpenHandle(imagePath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        var buf = new byte[BlockSize];
        foreach (var off in offsets)
        {
            var n = RandomAccess.Read(h, buf, off);
            var want = Expected(tag, off);
            if (n != BlockSize)
            {
                bad.Add($"off={off}: short read {n}");
                continue;
            }

            var first = buf.AsSpan().CommonPrefixLength(want);
            if (first < BlockSize)
            {
                var head = Encoding.ASCII.GetString(buf, 0, 48).Replace("\0", "\\0", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);
                bad.Add($"off={off}: first difference at byte {first} (head '{head}')");
            }
        }

        return bad;
    }

    /// <summary>The tag of pass <paramref name="pass"/> of blkpattern's stress workload: its blocks are <see cref="Expected"/> with "TAG-pPASS".</summary>
    public static string PassTag(string tag, int pass) => $"{tag}-p{pass.ToString(System.Globalization.CultureInfo.InvariantCulture)}";

    /// <summary>
    /// Checks <paramref name="blocks"/> consecutive 4 KiB blocks from <paramref name="first"/> against pass
    /// <paramref name="pass"/> of the stress workload; a block that differs is classified as holding the previous pass (a
    /// lost write) or something else.
    /// </summary>
    public static RegionCheck CheckRegion(string imagePath, string tag, long first, long blocks, int pass)
    {
        var examples = new List<string>();
        long bad = 0, previous = 0;
        using SafeFileHandle h = File.OpenHandle(imagePath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        var buf = new byte[BlockSize];
        for (long i = 0; i < blocks; i++)
        {
            var off = first + (i * BlockSize);
            var n = RandomAccess.Read(h, buf, off);
            if (n == BlockSize && buf.AsSpan().SequenceEqual(Expected(PassTag(tag, pass), off)))
            {
                continue;
            }

            bad++;
            var stale = n == BlockSize && pass > 1 && buf.AsSpan().SequenceEqual(Expected(PassTag(tag, pass - 1), off));
            previous += stale ? 1 : 0;
            if (examples.Count < 10)
            {
                var head = Encoding.ASCII.GetString(buf, 0, Math.Min(n, 48)).Replace("\0", "\\0", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);
                examples.Add($"off={off}: {(n != BlockSize ? $"short read {n}" : stale ? "holds the previous pass" : "other content")} (head '{head}')");
            }
        }

        return new RegionCheck(blocks, bad, previous, examples);
    }

    /// <summary>True when the 4 KiB block at <paramref name="offset"/> is all zeros (nothing was written there).</summary>
    public static bool IsZeroBlock(string imagePath, long offset)
    {
        using SafeFileHandle h = File.OpenHandle(imagePath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        var buf = new byte[BlockSize];
        var n = RandomAccess.Read(h, buf, offset);
        return n == BlockSize && !buf.AsSpan().ContainsAnyExcept((byte)0);
    }
}

/// <summary>Result of <see cref="BlockPattern.CheckRegion"/>: blocks checked, blocks that differ, of those how many hold the previous pass, examples.</summary>
public sealed record RegionCheck(long Blocks, long Mismatches, long HoldPreviousPass, IReadOnlyList<string> Examples);
