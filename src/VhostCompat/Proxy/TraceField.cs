namespace VhostCompat.Proxy;

/// <summary>How a <see cref="TraceField"/> is rendered (text: <c>name=value</c>; JSON: a member of <c>fields</c>).</summary>
internal enum TraceValueKind
{
    /// <summary>Decimal number (counts, indices, sizes of small things). JSON number.</summary>
    Number,

    /// <summary>An address, size or raw word in hex (<c>0x1f</c>). JSON string, so a u64 keeps every bit.</summary>
    Hex,

    /// <summary>A bit set: hex value and the names of the bits set. Text <c>0x5(a,c)</c>; JSON <c>{"value":"0x5","names":["a","c"]}</c>.</summary>
    Bits,

    /// <summary>A word (an enumeration name, a MAC, a UUID, hex bytes). JSON string.</summary>
    Text,

    /// <summary>A flag. JSON true/false.</summary>
    Bool,

    /// <summary>A list of objects (memory regions). Text <c>name0.member=v</c>; JSON an array of objects.</summary>
    Items,
}

/// <summary>One decoded payload field: a spec-derived name and a value of one <see cref="TraceValueKind"/>.</summary>
internal readonly struct TraceField
{
    private TraceField(string name, TraceValueKind kind, ulong number, string? text, IReadOnlyList<string>? names, IReadOnlyList<TraceField[]>? items)
    {
        Name = name;
        Kind = kind;
        Number = number;
        Text = text;
        Names = names;
        Items = items;
    }

    public string Name { get; }

    public TraceValueKind Kind { get; }

    /// <summary>The value of a Number, Hex, Bits or Bool (0/1) field.</summary>
    public ulong Number { get; }

    /// <summary>The value of a Text field.</summary>
    public string? Text { get; }

    /// <summary>The bit names of a Bits field.</summary>
    public IReadOnlyList<string>? Names { get; }

    /// <summary>The objects of an Items field.</summary>
    public IReadOnlyList<TraceField[]>? Items { get; }

    public static TraceField Num(string name, ulong value) => new(name, TraceValueKind.Number, value, null, null, null);

    public static TraceField Hex(string name, ulong value) => new(name, TraceValueKind.Hex, value, null, null, null);

    public static TraceField Bits(string name, ulong value, IReadOnlyList<string> names) => new(name, TraceValueKind.Bits, value, null, names, null);

    public static TraceField Str(string name, string value) => new(name, TraceValueKind.Text, 0, value, null, null);

    public static TraceField Bool(string name, bool value) => new(name, TraceValueKind.Bool, value ? 1UL : 0, null, null, null);

    public static TraceField List(string name, IReadOnlyList<TraceField[]> items) => new(name, TraceValueKind.Items, 0, null, null, items);
}

/// <summary>The decoded payload of one message: its fields, and whether the payload did not fit its request.</summary>
/// <param name="Fields">Fields in wire order; for a malformed payload <c>malformed</c> (byte count) and <c>hex</c>.</param>
/// <param name="Malformed">True when the size (or a count inside the payload) does not fit the request.</param>
internal readonly record struct TraceDecoded(IReadOnlyList<TraceField> Fields, bool Malformed);
