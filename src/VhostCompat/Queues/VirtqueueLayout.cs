namespace VhostCompat.Queues;

/// <summary>Constants of the split and packed ring layouts (virtio 1.x, "Virtqueues").</summary>
internal static class VirtqueueLayout
{
    public const ushort DescFlagNext = 1;
    public const ushort DescFlagWrite = 2;
    public const ushort DescFlagIndirect = 4;
    public const ushort PackedFlagAvail = 1 << 7;
    public const ushort PackedFlagUsed = 1 << 15;
    public const ushort AvailFlagNoInterrupt = 1;
    public const ushort PackedEventEnable = 0;
    public const ushort PackedEventDisable = 1;
    public const ushort PackedEventDesc = 2;
    public const int DescriptorSize = 16;

    /// <summary>Largest indirect table accepted (entries); the spec bounds queues at 32768.</summary>
    public const int MaxIndirectEntries = 32768;

    public static ulong SplitAvailBytes(int size) => 6 + (2 * (ulong)size);

    public static ulong SplitUsedBytes(int size) => 6 + (8 * (ulong)size);

    /// <summary>vring_need_event: notify when new_idx has moved past event since old_idx.</summary>
    public static bool NeedEvent(ushort eventIndex, ushort newIndex, ushort oldIndex) =>
        (ushort)(newIndex - eventIndex - 1) < (ushort)(newIndex - oldIndex);
}
