namespace VhostCompat.Samples.Input;

/// <summary>Linux input event numbers the keyboard uses (linux/input-event-codes.h values, the evdev ABI) and a US layout.</summary>
internal static class KeyMap
{
    public const ushort EvSyn = 0x00;
    public const ushort EvKey = 0x01;
    public const ushort EvLed = 0x11;
    public const ushort EvRep = 0x14;
    public const ushort KeyLeftShift = 42;

    /// <summary>Highest key code the device announces (the main keyboard block).</summary>
    public const int MaxKey = 127;

    /// <summary>LED_NUML, LED_CAPSL, LED_SCROLLL: the LEDs of a PC keyboard; LED_MAX is 0x0f.</summary>
    public static readonly string[] LedNames = ["num lock", "caps lock", "scroll lock"];

    private static readonly Dictionary<char, (ushort Code, bool Shift)> Keys = Build();

    /// <summary>The key and shift state that types <paramref name="c"/>, or false for a character the layout lacks.</summary>
    public static bool TryGet(char c, out ushort code, out bool shift)
    {
        bool found = Keys.TryGetValue(c, out var k);
        (code, shift) = k;
        return found;
    }

    /// <summary>The first character of <paramref name="text"/> the layout cannot type, or null.</summary>
    public static char? FirstUntypable(string text) => text.Select(c => (char?)c).FirstOrDefault(c => !Keys.ContainsKey(c!.Value));

    private static Dictionary<char, (ushort, bool)> Build()
    {
        var map = new Dictionary<char, (ushort, bool)>();
        void Row(string keys, ushort first)
        {
            for (int i = 0; i < keys.Length; i++)
            {
                map[keys[i]] = ((ushort)(first + i), false);
                if (char.IsAsciiLetterLower(keys[i]))
                {
                    map[char.ToUpperInvariant(keys[i])] = ((ushort)(first + i), true);
                }
            }
        }

        Row("1234567890-=", 2);
        Row("qwertyuiop[]", 16);
        Row("asdfghjkl;'`", 30);
        Row("zxcvbnm,./", 44);
        map['\\'] = (43, false);
        map[' '] = (57, false);
        map['\n'] = (28, false);
        const string shifted = "!@#$%^&*()_+", plain = "1234567890-=";
        for (int i = 0; i < shifted.Length; i++)
        {
            map[shifted[i]] = (map[plain[i]].Item1, true);
        }

        map['?'] = (53, true);
        map[':'] = (39, true);
        map['"'] = (40, true);
        return map;
    }
}
