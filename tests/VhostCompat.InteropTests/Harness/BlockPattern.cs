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
}
