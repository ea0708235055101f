using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.Benchmarks.Soak;

/// <summary>One kind of misbehaviour: a name, its group ("message" or "session") and the code that performs it on a fresh connection.</summary>
internal sealed record SoakCase(string Name, string Group, Func<CaseContext, Task<PeerOutcome>> Run);

/// <summary>What a case gets for one cycle: the socket, the seeded random source, and a bag for the fds it creates.</summary>
internal sealed class CaseContext(string socketPath, SoakDevice device, Random random, FdBag fds, TimeSpan timeout)
{
    /// <summary>The frontend address the raw cases give guest RAM (any value works: the backend maps the memfd wherever it likes).</summary>
    public const ulong Uva = 0x7f00_0000_0000;

    public const ulong RamSize = 1 << 20;

    public string SocketPath => socketPath;

    public SoakDevice Device => device;

    public Random Random => random;

    public FdBag Fds => fds;

    public TimeSpan Timeout => timeout;

    public int QueueCount => device == SoakDevice.Net ? 2 : 1;

    public T Pick<T>(params T[] choices) => choices[random.Next(choices.Length)];

    public Task<RawPeer> ConnectAsync() => RawPeer.ConnectAsync(socketPath, timeout);

    /// <summary>
    /// The opening a frontend makes, sent raw: GET_FEATURES, GET/SET_PROTOCOL_FEATURES (REPLY_ACK, MQ, CONFIG where
    /// offered), SET_OWNER, SET_FEATURES (split ring). Later requests can then ask for acks. False if the backend did not answer.
    /// </summary>
    public async Task<bool> HandshakeAsync(RawPeer p)
    {
        ulong? offered = await p.RequestU64Async(FrontendRequest.GetFeatures, default, false, timeout).ConfigureAwait(false);
        if (offered is null)
        {
            return false;
        }

        if ((offered.Value & VirtioFeatureBits.ProtocolFeatures) != 0)
        {
            ulong? protocol = await p.RequestU64Async(FrontendRequest.GetProtocolFeatures, default, false, timeout).ConfigureAwait(false);
            if (protocol is null)
            {
                return false;
            }

            const ulong wanted = (ulong)(VhostUserProtocolFeatures.ReplyAck | VhostUserProtocolFeatures.Mq | VhostUserProtocolFeatures.Config);
            p.Send(FrontendRequest.SetProtocolFeatures, U64Payload.Encode(protocol.Value & wanted));
        }

        p.Send(FrontendRequest.SetOwner);
        return p.Send(FrontendRequest.SetFeatures, U64Payload.Encode(offered.Value & ~VirtioFeatureBits.RingPacked));
    }

    /// <summary>A valid one-region SET_MEM_TABLE over a fresh 1 MiB memfd (the first bytes optionally filled with <paramref name="contents"/>).</summary>
    public bool SendValidMemTable(RawPeer p, ReadOnlySpan<byte> contents = default)
    {
        int fd = fds.Memfd((long)RamSize);
        if (!contents.IsEmpty)
        {
            FdBag.Fill(fd, contents);
        }

        return p.Send(FrontendRequest.SetMemTable, MemoryTablePayload.Encode([new MemoryRegionPayload(0, RamSize, Uva, 0)]), [fd], needReply: true);
    }
}
