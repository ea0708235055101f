namespace VhostCompat.Protocol;

/// <summary>Front-end → back-end request codes (vhost-user spec, "Front-end message types").</summary>
internal enum FrontendRequest : uint
{
    None = 0,
    GetFeatures = 1,
    SetFeatures = 2,
    SetOwner = 3,
    ResetOwner = 4,
    SetMemTable = 5,
    SetLogBase = 6,
    SetLogFd = 7,
    SetVringNum = 8,
    SetVringAddr = 9,
    SetVringBase = 10,
    GetVringBase = 11,
    SetVringKick = 12,
    SetVringCall = 13,
    SetVringErr = 14,
    GetProtocolFeatures = 15,
    SetProtocolFeatures = 16,
    GetQueueNum = 17,
    SetVringEnable = 18,
    SendRarp = 19,
    NetSetMtu = 20,
    SetBackendReqFd = 21,
    IotlbMsg = 22,
    SetVringEndian = 23,
    GetConfig = 24,
    SetConfig = 25,
    CreateCryptoSession = 26,
    CloseCryptoSession = 27,
    PostcopyAdvise = 28,
    PostcopyListen = 29,
    PostcopyEnd = 30,
    GetInflightFd = 31,
    SetInflightFd = 32,
    GpuSetSocket = 33,
    ResetDevice = 34,
    VringKick = 35,
    GetMaxMemSlots = 36,
    AddMemReg = 37,
    RemMemReg = 38,
    SetStatus = 39,
    GetStatus = 40,
    GetSharedObject = 41,
    SetDeviceStateFd = 42,
    CheckDeviceState = 43,
    GetShmemConfig = 44,
    GetVringBaseSkipDrain = 45,
}

/// <summary>Back-end → front-end request codes, sent on the back-end channel (SET_BACKEND_REQ_FD).</summary>
internal enum BackendRequest : uint
{
    None = 0,
    IotlbMsg = 1,
    ConfigChangeMsg = 2,
    VringHostNotifierMsg = 3,
    VringCall = 4,
    VringErr = 5,
    SharedObjectAdd = 6,
    SharedObjectRemove = 7,
    SharedObjectLookup = 8,
}

internal static class RequestNames
{
    private static readonly string[] FrontendNames = BuildNames();

    private static string[] BuildNames()
    {
        var names = new string[(int)Enum.GetValues<FrontendRequest>().Max() + 1];
        foreach (FrontendRequest r in Enum.GetValues<FrontendRequest>())
        {
            names[(int)r] = ToSpecName(r.ToString());
        }

        names[(int)FrontendRequest.SetBackendReqFd] = "SET_BACKEND_REQ_FD";
        names[(int)FrontendRequest.NetSetMtu] = "NET_SET_MTU";
        names[(int)FrontendRequest.IotlbMsg] = "IOTLB_MSG";
        return names;
    }

    private static string ToSpecName(string pascal)
    {
        var sb = new System.Text.StringBuilder(pascal.Length + 8);
        for (int i = 0; i < pascal.Length; i++)
        {
            char c = pascal[i];
            if (i > 0 && char.IsUpper(c))
            {
                sb.Append('_');
            }

            sb.Append(char.ToUpperInvariant(c));
        }

        return sb.ToString();
    }

    /// <summary>The spec name (e.g. <c>SET_VRING_ADDR</c>) of a raw request code; never indexes by an unchecked value.</summary>
    public static string Name(uint code) =>
        code < (uint)FrontendNames.Length && code != 0 ? FrontendNames[code] : $"UNKNOWN({code})";

    public static string Name(FrontendRequest request) => Name((uint)request);
}
