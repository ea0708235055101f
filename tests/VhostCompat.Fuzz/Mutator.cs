using System.Buffers.Binary;

namespace VhostCompat.Fuzz;

/// <summary>
/// Deterministic byte-level mutations (the same seed gives the same sequence of inputs): bit
/// flips, interesting bytes, u16/u32/u64 boundary values (ring sizes, wrap bits, page and region
/// edges), small arithmetic, chunk insert/delete/duplicate and splicing two corpus entries.
/// </summary>
internal sealed class Mutator(int seed, int maxLength = 32 * 1024)
{
    private static readonly byte[] Bytes8 = [0, 1, 2, 3, 4, 7, 8, 0x0f, 0x10, 0x1f, 0x20, 0x40, 0x7f, 0x80, 0x81, 0xc0, 0xfe, 0xff];
    private static readonly ushort[] Values16 = [0, 1, 2, 3, 4, 7, 8, 15, 16, 0xff, 0x100, 0x101, 0x1000, 0x7fff, 0x8000, 0x8001, 0x8080, 0xfffe, 0xffff];
    private static readonly uint[] Values32 = [0, 1, 8, 12, 16, 0xfff, 0x1000, 0x1001, 0x4000, 0x10000, 0x7fffffff, 0x80000000, 0x80008000, 0xfffffffe, 0xffffffff];
    private static readonly ulong[] Values64 = [0, 1, 0xfff, 0x1000, 0x10000, 0x10010, 0x13ff0, 0x14000, 0x14ff0, 0x15000, 0x7f00_0001_0000, 0x7fff_ffff_ffff_ffff, 0x8000_0000_0000_0000, 0xffff_ffff_ffff_f000, ulong.MaxValue];

    private readonly Random _random = new(seed);

    public byte[] Mutate(byte[] input, IReadOnlyList<byte[]> corpus)
    {
        var b = new List<byte>(input);
        int rounds = 1 + _random.Next(4);
        for (int i = 0; i < rounds; i++)
        {
            MutateOnce(b, corpus);
        }

        if (b.Count > maxLength)
        {
            b.RemoveRange(maxLength, b.Count - maxLength);
        }

        return [.. b];
    }

    private void MutateOnce(List<byte> b, IReadOnlyList<byte[]> corpus)
    {
        int kind = _random.Next(b.Count == 0 ? 2 : 12);
        switch (kind)
        {
            case 0: // insert a chunk of random or repeated bytes
            {
                int at = _random.Next(b.Count + 1);
                var chunk = new byte[1 + _random.Next(32)];
                if (_random.Next(2) == 0)
                {
                    _random.NextBytes(chunk);
                }
                else
                {
                    Array.Fill(chunk, Bytes8[_random.Next(Bytes8.Length)]);
                }

                b.InsertRange(at, chunk);
                break;
            }

            case 1: // splice: our head, another entry's tail
            {
                var other = corpus[_random.Next(corpus.Count)];
                int cut = _random.Next(b.Count + 1);
                int from = _random.Next(other.Length + 1);
                b.RemoveRange(cut, b.Count - cut);
                b.AddRange(other.AsSpan(from).ToArray());
                break;
            }

            case 2:
                b[Pos(b, 1)] ^= (byte)(1 << _random.Next(8));
                break;
            case 3:
                b[Pos(b, 1)] = Bytes8[_random.Next(Bytes8.Length)];
                break;
            case 4:
                Put(b, 2, Values16[_random.Next(Values16.Length)]);
                break;
            case 5:
                Put(b, 4, Values32[_random.Next(Values32.Length)]);
                break;
            case 6:
                Put(b, 8, Values64[_random.Next(Values64.Length)]);
                break;
            case 7: // small arithmetic on a u16 (indices, lengths, ids)
            {
                int at = Pos(b, 2);
                if (at + 2 <= b.Count)
                {
                    ushort v = (ushort)(b[at] | (b[at + 1] << 8));
                    v = (ushort)(v + _random.Next(-16, 17));
                    b[at] = (byte)v;
                    b[at + 1] = (byte)(v >> 8);
                }

                break;
            }

            case 8: // delete a chunk
            {
                int at = _random.Next(b.Count);
                b.RemoveRange(at, Math.Min(b.Count - at, 1 + _random.Next(32)));
                break;
            }

            case 9: // duplicate a chunk elsewhere
            {
                int at = _random.Next(b.Count);
                var chunk = b.GetRange(at, Math.Min(b.Count - at, 1 + _random.Next(64)));
                b.InsertRange(_random.Next(b.Count + 1), chunk);
                break;
            }

            case 10: // copy a 16-byte-aligned block over another (descriptor-sized)
            {
                int n = b.Count / 16;
                if (n >= 2)
                {
                    int from = _random.Next(n) * 16;
                    int to = _random.Next(n) * 16;
                    for (int k = 0; k < 16; k++)
                    {
                        b[to + k] = b[from + k];
                    }
                }

                break;
            }

            default:
                b[Pos(b, 1)] = (byte)_random.Next(256);
                break;
        }
    }

    /// <summary>A random position, biased towards the start where headers and ring indices live.</summary>
    private int Pos(List<byte> b, int width)
    {
        int limit = Math.Max(1, b.Count - width + 1);
        return _random.Next(4) == 0 ? _random.Next(Math.Min(limit, 64)) : _random.Next(limit);
    }

    private void Put(List<byte> b, int width, ulong value)
    {
        if (b.Count < width)
        {
            return;
        }

        // Aligned half the time: ring fields are naturally aligned.
        int at = Pos(b, width);
        if (_random.Next(2) == 0)
        {
            at -= at % width;
        }

        Span<byte> v = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(v, value);
        for (int k = 0; k < width; k++)
        {
            b[at + k] = v[k];
        }
    }
}
