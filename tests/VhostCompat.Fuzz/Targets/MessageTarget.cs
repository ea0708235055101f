using System.Buffers;
using VhostCompat.Memory;
using VhostCompat.Protocol;

namespace VhostCompat.Fuzz.Targets;

/// <summary>
/// The control-message path up to the session: framing (<see cref="MessageFraming"/>), syntax
/// (<see cref="PayloadRules"/>) and the payload readers. Input: byte 0 = fd count (bits 0–1) and
/// the XEN_MMAP flag (bit 2); byte 1 = where the stream is split into two segments; the rest is
/// the byte stream from the frontend. The only documented rejections are a
/// <see cref="VhostUserFramingException"/> (the connection closes) and a non-null reason from
/// <see cref="PayloadRules.Validate"/>; a payload that passes validation must then be readable
/// without an exception, and its addresses must translate inside guest memory or not at all.
/// </summary>
internal sealed class MessageTarget : IFuzzTarget
{
    private readonly FuzzRam _ram = new();

    public string Name => "message";

    /// <summary>Messages of the last input that passed validation.</summary>
    public int LastValid { get; private set; }

    public int Reached => LastValid;

    public void Execute(ReadOnlySpan<byte> input)
    {
        LastValid = 0;
        if (input.Length < 2)
        {
            return;
        }

        int fds = input[0] & 3;
        bool xen = (input[0] & 4) != 0;
        var stream = SplitSequence.Create(input[2..].ToArray(), input[1]);
        long total = stream.Length;
        while (true)
        {
            bool complete;
            MessageHeader header;
            byte[] payload;
            long consumed;
            try
            {
                complete = MessageFraming.TryDecode(stream, out header, out payload, out consumed);
            }
            catch (VhostUserFramingException)
            {
                return;
            }

            if (!complete)
            {
                return;
            }

            if (consumed != MessageHeader.Length + (long)header.Size || payload.Length != header.Size || consumed > total)
            {
                throw new FuzzFailureException($"decoder consumed {consumed} for size {header.Size} with payload {payload.Length}");
            }

            _ = RequestNames.Name(header.Request);
            if (PayloadRules.Validate(header.Request, payload, fds, xen) is null)
            {
                LastValid++;
                ReadPayload((FrontendRequest)header.Request, payload, xen);
            }

            stream = stream.Slice(consumed);
        }
    }

    private void ReadPayload(FrontendRequest request, byte[] p, bool xen)
    {
        switch (request)
        {
            case FrontendRequest.SetFeatures or FrontendRequest.SetProtocolFeatures or FrontendRequest.SetStatus
                or FrontendRequest.NetSetMtu or FrontendRequest.SendRarp or FrontendRequest.CloseCryptoSession:
                Same(U64Payload.Read(U64Payload.Encode(U64Payload.Read(p))), U64Payload.Read(p));
                break;
            case FrontendRequest.SetVringNum or FrontendRequest.SetVringBase or FrontendRequest.GetVringBase
                or FrontendRequest.SetVringEnable or FrontendRequest.SetVringEndian or FrontendRequest.VringKick:
                Same(VringStatePayload.Read(VringStatePayload.Read(p).Encode()), VringStatePayload.Read(p));
                break;
            case FrontendRequest.SetVringAddr:
            {
                var a = VringAddressPayload.Read(p);
                Same(VringAddressPayload.Read(a.Encode()), a);
                Translate(a.Descriptor, 16UL * (a.Index & 0xFFFF));
                Translate(a.Available, 6 + (2UL * (a.Flags & 0xFFFF)));
                Translate(a.Used, a.LogGuestAddress & 0xFFFFF);
                break;
            }

            case FrontendRequest.SetMemTable:
            {
                uint n = MemoryTablePayload.ReadCount(p);
                var regions = new List<MemoryRegionPayload>();
                for (int i = 0; i < n; i++)
                {
                    var r = xen ? MemoryRegionPayload.Read(p.AsSpan(MemoryTablePayload.HeaderSize + (40 * i))) : MemoryTablePayload.ReadRegion(p, i);
                    if (GuestMemoryRegion.ValidateDescription(r) is null)
                    {
                        regions.Add(r);
                    }
                }

                _ = GuestMemoryTable.FindOverlap(regions);
                break;
            }

            case FrontendRequest.AddMemReg or FrontendRequest.RemMemReg:
                _ = GuestMemoryRegion.ValidateDescription(SingleRegionPayload.Read(p));
                break;
            case FrontendRequest.SetLogBase:
                Same(LogDescriptionPayload.Read(LogDescriptionPayload.Read(p).Encode()), LogDescriptionPayload.Read(p));
                break;
            case FrontendRequest.GetConfig or FrontendRequest.SetConfig:
            {
                var h = DeviceConfigHeader.Read(p);
                Same(DeviceConfigHeader.Read(h.Encode(p.AsSpan(DeviceConfigHeader.Length))), h);
                break;
            }

            case FrontendRequest.GetInflightFd or FrontendRequest.SetInflightFd:
            {
                var d = InflightDescriptionPayload.Read(p);
                Same(InflightDescriptionPayload.Read(d.Encode()), d);
                _ = InflightArea.QueueRegionSize(d.QueueSize, packed: (d.NumQueues & 1) != 0);
                break;
            }

            case FrontendRequest.IotlbMsg:
            {
                var t = IotlbPayload.Read(p);
                Translate(t.Iova, t.Size);
                break;
            }

            case FrontendRequest.SetDeviceStateFd:
                _ = DeviceStateTransferPayload.Read(p);
                break;
        }
    }

    /// <summary>Any address/length pair from a message: a translation either fails or lands inside one region's mapping.</summary>
    private void Translate(ulong address, ulong length)
    {
        Check(_ram.Table.TryTranslateGuestPhysical(address, length, out nint h1), h1, length, false, address);
        Check(_ram.Table.TryTranslateFrontendVirtual(address, length, out nint h2), h2, length, true, address);
        // The same length near guest memory, so the fuzzer reaches the boundaries without guessing 64-bit addresses.
        ulong shifted = FuzzRam.Gpa - 0x1000 + (address % 0x7000);
        Check(_ram.Table.TryTranslateGuestPhysical(shifted, length, out nint h3), h3, length, false, shifted);
        Check(_ram.Table.TryTranslateFrontendVirtual(FuzzRam.Ua(shifted), length, out nint h4), h4, length, true, FuzzRam.Ua(shifted));
    }

    private void Check(bool ok, nint host, ulong length, bool userspace, ulong address)
    {
        if (!ok)
        {
            return;
        }

        foreach (var r in _ram.Table.Regions)
        {
            ulong start = userspace ? r.UserspaceAddress : r.GuestPhysicalAddress;
            if (address >= start && address - start < r.Size)
            {
                ulong offset = (ulong)(host - r.Base);
                if (host < r.Base || offset > r.Size || length > r.Size - offset)
                {
                    throw new FuzzFailureException($"0x{address:x}+0x{length:x} translated outside region 0x{start:x}+0x{r.Size:x}");
                }

                return;
            }
        }

        throw new FuzzFailureException($"0x{address:x}+0x{length:x} translated although no region holds it");
    }

    /// <summary>Encoding what was read and reading it again gives the same fields (padding is not compared).</summary>
    private static void Same<T>(T again, T original)
        where T : IEquatable<T>
    {
        if (!again.Equals(original))
        {
            throw new FuzzFailureException($"{original} does not survive encode and read");
        }
    }

    public IEnumerable<(string Name, byte[] Data)> Seeds() => MessageSeeds.All();

    public void Dispose() => _ram.Dispose();
}

/// <summary>A byte stream as a two-segment sequence, the way a pipe hands over a message that arrived in two reads.</summary>
internal sealed class SplitSequence : ReadOnlySequenceSegment<byte>
{
    private SplitSequence(ReadOnlyMemory<byte> memory, long runningIndex)
    {
        Memory = memory;
        RunningIndex = runningIndex;
    }

    public static ReadOnlySequence<byte> Create(byte[] data, int split)
    {
        if (data.Length < 2)
        {
            return new ReadOnlySequence<byte>(data);
        }

        int at = 1 + (split % (data.Length - 1));
        var first = new SplitSequence(data.AsMemory(0, at), 0);
        var second = new SplitSequence(data.AsMemory(at), at);
        first.Next = second;
        return new ReadOnlySequence<byte>(first, 0, second, second.Memory.Length);
    }
}
