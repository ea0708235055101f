using System.Buffers.Binary;

namespace VhostCompat.Virtio;

/// <summary>
/// A fixed-field device config space (virtio-blk, virtio-gpu, virtio-snd, virtio-fs, ...): a little-endian byte
/// image of <see cref="Size"/> bytes and the ranges the driver may write. It implements the rules that work with
/// real frontends (docs/authoring.md, "Config space"): <see cref="Read"/> serves any validated range of the image;
/// <see cref="Write"/> stores only the bytes inside writable ranges and ignores the others, because QEMU writes the
/// whole config back — read-only fields included, with the values it last read — every time the driver writes
/// one byte. Not thread-safe; the SDK calls <c>ReadConfig</c>/<c>WriteConfig</c> one at a time.
/// </summary>
public sealed class ConfigSpace
{
    private readonly byte[] _image;
    private readonly bool[] _writable;

    /// <summary>An all-zero, all-read-only config space of <paramref name="size"/> bytes (1..256, the vhost-user maximum).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is outside 1..256.</exception>
    public ConfigSpace(int size)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(size, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(size, 256);
        _image = new byte[size];
        _writable = new bool[size];
    }

    /// <summary>Size in bytes (what the device returns from <c>ConfigSize</c>).</summary>
    public int Size => _image.Length;

    /// <summary>The image itself, for fields this type has no setter for (strings, arrays).</summary>
    public Span<byte> Image => _image;

    /// <summary>Lets the driver write <paramref name="length"/> bytes at <paramref name="offset"/> (e.g. virtio-blk <c>writeback</c>).</summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside the config space.</exception>
    public ConfigSpace Writable(int offset, int length)
    {
        Check(offset, length);
        _writable.AsSpan(offset, length).Fill(true);
        return this;
    }

    /// <summary>Sets a u8 field.</summary>
    public ConfigSpace SetU8(int offset, byte value)
    {
        Check(offset, 1);
        _image[offset] = value;
        return this;
    }

    /// <summary>Sets a little-endian u16 field (virtio config fields are little-endian for VERSION_1 devices).</summary>
    public ConfigSpace SetU16(int offset, ushort value)
    {
        Check(offset, 2);
        BinaryPrimitives.WriteUInt16LittleEndian(_image.AsSpan(offset), value);
        return this;
    }

    /// <summary>Sets a little-endian u32 field.</summary>
    public ConfigSpace SetU32(int offset, uint value)
    {
        Check(offset, 4);
        BinaryPrimitives.WriteUInt32LittleEndian(_image.AsSpan(offset), value);
        return this;
    }

    /// <summary>Sets a little-endian u64 field.</summary>
    public ConfigSpace SetU64(int offset, ulong value)
    {
        Check(offset, 8);
        BinaryPrimitives.WriteUInt64LittleEndian(_image.AsSpan(offset), value);
        return this;
    }

    /// <summary>Sets a byte-string field of <paramref name="length"/> bytes: <paramref name="value"/> truncated, the rest zero (virtio-fs <c>tag</c>).</summary>
    public ConfigSpace SetBytes(int offset, int length, ReadOnlySpan<byte> value)
    {
        Check(offset, length);
        Span<byte> field = _image.AsSpan(offset, length);
        field.Clear();
        value[..Math.Min(value.Length, length)].CopyTo(field);
        return this;
    }

    /// <summary>Reads a little-endian u16 field (e.g. a value the driver wrote).</summary>
    public ushort GetU16(int offset)
    {
        Check(offset, 2);
        return BinaryPrimitives.ReadUInt16LittleEndian(_image.AsSpan(offset));
    }

    /// <summary>Copies the image at <paramref name="offset"/> into <paramref name="destination"/> (<c>ReadConfig</c>).</summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside the config space (the SDK has validated it already).</exception>
    public void Read(int offset, Span<byte> destination)
    {
        Check(offset, destination.Length);
        _image.AsSpan(offset, destination.Length).CopyTo(destination);
    }

    /// <summary>
    /// Applies a driver write (<c>WriteConfig</c>): bytes inside writable ranges are stored, the others ignored.
    /// Returns the number of writable bytes whose value changed (0: nothing to react to). Never refuses: return
    /// true from <c>WriteConfig</c>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside the config space.</exception>
    public int Write(int offset, ReadOnlySpan<byte> data)
    {
        Check(offset, data.Length);
        int changed = 0;
        for (int i = 0; i < data.Length; i++)
        {
            int at = offset + i;
            if (_writable[at] && _image[at] != data[i])
            {
                _image[at] = data[i];
                changed++;
            }
        }

        return changed;
    }

    private void Check(int offset, int length)
    {
        if (offset < 0 || length < 0 || offset > _image.Length - length)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"{offset}+{length} is outside the {_image.Length}-byte config space");
        }
    }
}
