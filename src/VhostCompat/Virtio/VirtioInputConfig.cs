using System.Buffers.Binary;
using System.Text;

namespace VhostCompat.Virtio;

/// <summary>The <c>select</c> values of the virtio-input config space (virtio specification, "Input Device", "Device configuration layout").</summary>
public enum VirtioInputConfigSelect : byte
{
    /// <summary>No query (0): size 0.</summary>
    Unset = 0x00,

    /// <summary>VIRTIO_INPUT_CFG_ID_NAME (0x01): the device name, a string.</summary>
    IdName = 0x01,

    /// <summary>VIRTIO_INPUT_CFG_ID_SERIAL (0x02): the serial number, a string.</summary>
    IdSerial = 0x02,

    /// <summary>VIRTIO_INPUT_CFG_ID_DEVIDS (0x03): bus type, vendor, product and version.</summary>
    IdDevids = 0x03,

    /// <summary>VIRTIO_INPUT_CFG_PROP_BITS (0x10): the input device properties bitmap.</summary>
    PropBits = 0x10,

    /// <summary>VIRTIO_INPUT_CFG_EV_BITS (0x11): for <c>subsel</c> = an event type (EV_KEY, EV_LED, ...), the codes supported.</summary>
    EvBits = 0x11,

    /// <summary>VIRTIO_INPUT_CFG_ABS_INFO (0x12): for <c>subsel</c> = an absolute axis, its range.</summary>
    AbsInfo = 0x12,
}

/// <summary>
/// A select/subsel config space: the 136-byte virtio-input layout (<c>select</c> u8 at 0, <c>subsel</c> u8 at 1,
/// <c>size</c> u8 at 2, 5 reserved bytes, then a 128-byte union of string, bitmap, abs-info and device ids). The
/// driver writes <c>select</c> and <c>subsel</c>, then reads <c>size</c> and the union; this class keeps one payload
/// per (select, subsel) pair and serves the image of the current pair, size 0 for pairs it does not know, as the
/// specification requires. <see cref="Write"/> stores only <c>select</c> and <c>subsel</c> and ignores every other
/// byte, which is what works with QEMU (it writes all 136 bytes back on every byte the driver writes).
/// Not thread-safe; the SDK calls <c>ReadConfig</c>/<c>WriteConfig</c> one at a time.
/// </summary>
public sealed class VirtioInputConfig
{
    /// <summary>Size of the config space in bytes (what the device returns from <c>ConfigSize</c>).</summary>
    public const int Size = 136;

    /// <summary>Largest payload of one (select, subsel) pair: the union.</summary>
    public const int PayloadCapacity = 128;

    private readonly Dictionary<(byte, byte), byte[]> _payloads = [];
    private readonly byte[] _image = new byte[Size];
    private byte _select;
    private byte _subsel;

    /// <summary>The current <c>select</c> (written by the driver).</summary>
    public byte Select => _select;

    /// <summary>The current <c>subsel</c> (written by the driver).</summary>
    public byte Subsel => _subsel;

    /// <summary>Sets the payload of a (select, subsel) pair; an empty payload removes it (size 0).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="payload"/> is longer than 128 bytes.</exception>
    public VirtioInputConfig Set(VirtioInputConfigSelect select, byte subsel, ReadOnlySpan<byte> payload)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(payload.Length, PayloadCapacity, nameof(payload));
        if (payload.IsEmpty)
        {
            _payloads.Remove(((byte)select, subsel));
        }
        else
        {
            _payloads[((byte)select, subsel)] = payload.ToArray();
        }

        return this;
    }

    /// <summary>The device name (ID_NAME), UTF-8, at most 128 bytes (longer names are truncated).</summary>
    public VirtioInputConfig Name(string name) => SetString(VirtioInputConfigSelect.IdName, name);

    /// <summary>The serial number (ID_SERIAL), UTF-8, at most 128 bytes.</summary>
    public VirtioInputConfig Serial(string serial) => SetString(VirtioInputConfigSelect.IdSerial, serial);

    /// <summary>The device ids (ID_DEVIDS): bus type (e.g. BUS_VIRTUAL 6), vendor, product, version.</summary>
    public VirtioInputConfig DeviceIds(ushort busType, ushort vendor, ushort product, ushort version)
    {
        Span<byte> ids = stackalloc byte[8];
        BinaryPrimitives.WriteUInt16LittleEndian(ids, busType);
        BinaryPrimitives.WriteUInt16LittleEndian(ids[2..], vendor);
        BinaryPrimitives.WriteUInt16LittleEndian(ids[4..], product);
        BinaryPrimitives.WriteUInt16LittleEndian(ids[6..], version);
        return Set(VirtioInputConfigSelect.IdDevids, 0, ids);
    }

    /// <summary>
    /// The codes of event type <paramref name="eventType"/> (EV_KEY 1, EV_LED 0x11, EV_REP 0x14, ...) the device
    /// supports (EV_BITS): a bitmap, bit n = code n, sized to the highest code. Codes must be 0..1023.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A code is outside 0..1023.</exception>
    public VirtioInputConfig EventCodes(byte eventType, IEnumerable<int> codes) => Bitmap(VirtioInputConfigSelect.EvBits, eventType, codes);

    /// <summary>The input properties (PROP_BITS, INPUT_PROP_* numbers) as a bitmap.</summary>
    public VirtioInputConfig Properties(IEnumerable<int> properties) => Bitmap(VirtioInputConfigSelect.PropBits, 0, properties);

    /// <summary>The range of absolute axis <paramref name="axis"/> (ABS_INFO): min, max, fuzz, flat, resolution.</summary>
    public VirtioInputConfig AbsoluteAxis(byte axis, int min, int max, int fuzz = 0, int flat = 0, int resolution = 0)
    {
        Span<byte> abs = stackalloc byte[20];
        BinaryPrimitives.WriteInt32LittleEndian(abs, min);
        BinaryPrimitives.WriteInt32LittleEndian(abs[4..], max);
        BinaryPrimitives.WriteInt32LittleEndian(abs[8..], fuzz);
        BinaryPrimitives.WriteInt32LittleEndian(abs[12..], flat);
        BinaryPrimitives.WriteInt32LittleEndian(abs[16..], resolution);
        return Set(VirtioInputConfigSelect.AbsInfo, axis, abs);
    }

    /// <summary><c>ReadConfig</c>: copies the image of the current (select, subsel) at <paramref name="offset"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside the 136 bytes (the SDK has validated it already).</exception>
    public void Read(int offset, Span<byte> destination)
    {
        Check(offset, destination.Length);
        Array.Clear(_image);
        _image[0] = _select;
        _image[1] = _subsel;
        if (_payloads.TryGetValue((_select, _subsel), out byte[]? payload))
        {
            _image[2] = (byte)payload.Length;
            payload.CopyTo(_image, 8);
        }

        _image.AsSpan(offset, destination.Length).CopyTo(destination);
    }

    /// <summary>
    /// <c>WriteConfig</c>: takes <c>select</c> and <c>subsel</c> from the bytes that cover offsets 0 and 1 and ignores
    /// the rest (read-only fields). Returns true when the pair changed. Return true from <c>WriteConfig</c> whatever
    /// this returns: refusing a write of read-only bytes breaks QEMU's whole-config writes.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside the 136 bytes.</exception>
    public bool Write(int offset, ReadOnlySpan<byte> data)
    {
        Check(offset, data.Length);
        (byte select, byte subsel) = (_select, _subsel);
        if (offset == 0 && data.Length > 0)
        {
            _select = data[0];
        }

        if (offset <= 1 && offset + data.Length > 1)
        {
            _subsel = data[1 - offset];
        }

        return select != _select || subsel != _subsel;
    }

    private VirtioInputConfig SetString(VirtioInputConfigSelect select, string value)
    {
        ArgumentNullException.ThrowIfNull(value);
        byte[] bytes = Encoding.UTF8.GetBytes(value);
        return Set(select, 0, bytes.AsSpan(0, Math.Min(bytes.Length, PayloadCapacity)));
    }

    private VirtioInputConfig Bitmap(VirtioInputConfigSelect select, byte subsel, IEnumerable<int> bits)
    {
        ArgumentNullException.ThrowIfNull(bits);
        Span<byte> map = stackalloc byte[PayloadCapacity];
        map.Clear();
        int length = 0;
        foreach (int bit in bits)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(bit, nameof(bits));
            ArgumentOutOfRangeException.ThrowIfGreaterThan(bit, (PayloadCapacity * 8) - 1, nameof(bits));
            map[bit / 8] |= (byte)(1 << (bit % 8));
            length = Math.Max(length, (bit / 8) + 1);
        }

        return Set(select, subsel, map[..length]);
    }

    private static void Check(int offset, int length)
    {
        if (offset < 0 || length < 0 || offset > Size - length)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"{offset}+{length} is outside the {Size}-byte virtio-input config space");
        }
    }
}
