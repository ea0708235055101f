namespace VhostCompat.Protocol;

/// <summary>
/// The syntactic rules of each front-end request: exact payload size (or how to compute it),
/// how many fds it may carry, whether it always produces a reply. Semantics (state, limits)
/// are checked by the backend session.
/// </summary>
internal static class PayloadRules
{
    /// <summary>True when the request has a reply of its own (not a REPLY_ACK acknowledgement).</summary>
    public static bool HasOwnReply(FrontendRequest r) => r switch
    {
        FrontendRequest.GetFeatures or FrontendRequest.GetProtocolFeatures or FrontendRequest.GetQueueNum
            or FrontendRequest.GetVringBase or FrontendRequest.GetConfig or FrontendRequest.GetInflightFd
            or FrontendRequest.GetMaxMemSlots or FrontendRequest.GetStatus or FrontendRequest.PostcopyAdvise
            or FrontendRequest.PostcopyListen or FrontendRequest.PostcopyEnd or FrontendRequest.IotlbMsg
            or FrontendRequest.GetSharedObject or FrontendRequest.SetDeviceStateFd
            or FrontendRequest.CheckDeviceState or FrontendRequest.CreateCryptoSession
            or FrontendRequest.GetShmemConfig or FrontendRequest.GetVringBaseSkipDrain => true,
        _ => false,
    };

    /// <summary>
    /// Requests whose payload is empty: the first ones carry no fd, the last three (SET_LOG_FD, SET_BACKEND_REQ_FD,
    /// GPU_SET_SOCKET) exactly one. The one list, used by <see cref="Validate"/> and by the trace decoder.
    /// </summary>
    public static bool HasEmptyPayload(FrontendRequest r) => EmptyPayloadFds(r) >= 0;

    /// <summary>The fd count of a request with an empty payload; -1 when its payload is not empty.</summary>
    private static int EmptyPayloadFds(FrontendRequest r) => r switch
    {
        FrontendRequest.GetFeatures or FrontendRequest.SetOwner or FrontendRequest.ResetOwner or FrontendRequest.GetProtocolFeatures
            or FrontendRequest.GetQueueNum or FrontendRequest.ResetDevice or FrontendRequest.GetMaxMemSlots or FrontendRequest.GetStatus
            or FrontendRequest.CheckDeviceState or FrontendRequest.PostcopyAdvise or FrontendRequest.PostcopyListen
            or FrontendRequest.PostcopyEnd or FrontendRequest.GetShmemConfig => 0,
        FrontendRequest.SetLogFd or FrontendRequest.SetBackendReqFd or FrontendRequest.GpuSetSocket => 1,
        _ => -1,
    };

    /// <summary>
    /// Checks payload size and fd count. Returns null when valid, otherwise the reason.
    /// Requests this SDK does not know return a reason too (never indexes a table by the raw code).
    /// </summary>
    public static string? Validate(uint code, ReadOnlySpan<byte> payload, int fdCount, bool xenMmap = false)
    {
        int size = payload.Length;
        if (EmptyPayloadFds((FrontendRequest)code) is var emptyFds and >= 0)
        {
            return Exact(size, 0, fdCount, emptyFds);
        }

        switch ((FrontendRequest)code)
        {
            case FrontendRequest.SetFeatures:
            case FrontendRequest.SetProtocolFeatures:
            case FrontendRequest.SendRarp:
            case FrontendRequest.NetSetMtu:
            case FrontendRequest.SetStatus:
            case FrontendRequest.CloseCryptoSession:
                return Exact(size, U64Payload.Size, fdCount, 0);
            case FrontendRequest.SetVringNum:
            case FrontendRequest.SetVringBase:
            case FrontendRequest.GetVringBase:
            case FrontendRequest.GetVringBaseSkipDrain:
            case FrontendRequest.SetVringEnable:
            case FrontendRequest.SetVringEndian:
            case FrontendRequest.VringKick:
                return Exact(size, VringStatePayload.Size, fdCount, 0);
            case FrontendRequest.SetVringAddr:
                return Exact(size, VringAddressPayload.Size, fdCount, 0);
            case FrontendRequest.SetVringKick:
            case FrontendRequest.SetVringCall:
            case FrontendRequest.SetVringErr:
            {
                if (size != U64Payload.Size)
                {
                    return $"payload size {size}, expected {U64Payload.Size}";
                }

                ulong word = U64Payload.Read(payload);
                if ((word & VringFileWord.ReservedMask) != 0)
                {
                    return $"reserved bits set in 0x{word:x}";
                }

                int expected = (word & VringFileWord.NoFdFlag) != 0 ? 0 : 1;
                return fdCount == expected ? null : $"{fdCount} fds attached, expected {expected} (no-fd flag {(expected == 0 ? "set" : "clear")})";
            }

            case FrontendRequest.SetMemTable:
            {
                if (size < MemoryTablePayload.HeaderSize)
                {
                    return $"payload size {size} is smaller than the table header";
                }

                uint n = MemoryTablePayload.ReadCount(payload);
                if (n == 0 || n > MemoryTablePayload.MaxRegions)
                {
                    return $"region count {n} outside 1..{MemoryTablePayload.MaxRegions}";
                }

                int regionSize = xenMmap ? 40 : MemoryRegionPayload.Size;
                int expectedSize = MemoryTablePayload.HeaderSize + ((int)n * regionSize);
                if (size != expectedSize)
                {
                    return $"payload size {size}, expected {expectedSize} for {n} regions";
                }

                return fdCount == (int)n ? null : $"{fdCount} fds attached for {n} regions";
            }

            case FrontendRequest.AddMemReg:
                return Exact(size, SingleRegionPayload.Size, fdCount, 1);
            case FrontendRequest.RemMemReg:
                // Old front-ends attached one fd; it is accepted and closed.
                return size != SingleRegionPayload.Size ? $"payload size {size}, expected {SingleRegionPayload.Size}"
                    : fdCount > 1 ? $"{fdCount} fds attached, expected 0 or 1" : null;
            case FrontendRequest.SetLogBase:
                return Exact(size, LogDescriptionPayload.Size, fdCount, 1);
            case FrontendRequest.IotlbMsg:
                return Exact(size, IotlbPayload.WireSize, fdCount, 0);
            case FrontendRequest.GetConfig:
            case FrontendRequest.SetConfig:
            {
                if (fdCount != 0)
                {
                    return $"{fdCount} fds attached, expected 0";
                }

                if (size < DeviceConfigHeader.Length)
                {
                    return $"payload size {size} is smaller than the config header";
                }

                var h = DeviceConfigHeader.Read(payload);
                if (h.Size == 0 || h.Size > DeviceConfigHeader.MaxConfigSize)
                {
                    return $"config size {h.Size} outside 1..{DeviceConfigHeader.MaxConfigSize}";
                }

                return size == DeviceConfigHeader.Length + (long)h.Size ? null : $"payload size {size} does not match config size {h.Size}";
            }

            case FrontendRequest.GetInflightFd:
                return Exact(size, InflightDescriptionPayload.Size, fdCount, 0);
            case FrontendRequest.SetInflightFd:
                return Exact(size, InflightDescriptionPayload.Size, fdCount, 1);
            case FrontendRequest.SetDeviceStateFd:
                return Exact(size, DeviceStateTransferPayload.Size, fdCount, 1);
            case FrontendRequest.GetSharedObject:
                return Exact(size, 16, fdCount, 0);
            case FrontendRequest.CreateCryptoSession:
                return fdCount == 0 ? null : $"{fdCount} fds attached, expected 0";
            default:
                return "unknown request code";
        }
    }

    private static string? Exact(int size, int expectedSize, int fdCount, int expectedFds)
    {
        if (size != expectedSize)
        {
            return $"payload size {size}, expected {expectedSize}";
        }

        return fdCount != expectedFds ? $"{fdCount} fds attached, expected {expectedFds}" : null;
    }
}
