using System.Net.Sockets;
using VhostCompat.Interop;
using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.Frontend;

/// <summary>
/// A vhost-user frontend in C#: it plays QEMU's role against any backend — negotiates features,
/// shares <see cref="GuestMemory"/>, sets up rings and exchanges eventfds. When REPLY_ACK is
/// negotiated every request without a reply of its own carries NEED_REPLY and a refusal throws
/// <see cref="VhostUserRequestException"/>. Requests are serialised; the type is not meant for
/// concurrent callers.
/// </summary>
public sealed class VhostUserFrontend : IAsyncDisposable
{
    private readonly VhostUserConnection _connection;
    private readonly SemaphoreSlim _gate = new(1, 1);

    private VhostUserFrontend(Socket socket, TimeSpan replyTimeout)
    {
        _connection = new VhostUserConnection(socket, replyTimeout);
        ReplyTimeout = replyTimeout;
    }

    /// <summary>How long to wait for each reply before failing.</summary>
    public TimeSpan ReplyTimeout { get; }

    /// <summary>Protocol features acked with <see cref="SetProtocolFeaturesAsync"/>.</summary>
    public VhostUserProtocolFeatures AckedProtocolFeatures { get; private set; }

    /// <summary>Connects to a backend listening on <paramref name="socketPath"/>.</summary>
    public static async Task<VhostUserFrontend> ConnectAsync(string socketPath, TimeSpan? replyTimeout = null, CancellationToken cancellationToken = default)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            socket.Dispose();
            throw;
        }

        return new VhostUserFrontend(socket, replyTimeout ?? TimeSpan.FromSeconds(5));
    }

    /// <summary>Wraps an already-connected socket (e.g. one accepted in frontend-server mode). Takes ownership.</summary>
    public static VhostUserFrontend FromConnectedSocket(Socket socket, TimeSpan? replyTimeout = null) =>
        new(socket, replyTimeout ?? TimeSpan.FromSeconds(5));

    private bool ReplyAck => (AckedProtocolFeatures & VhostUserProtocolFeatures.ReplyAck) != 0;

    /// <summary>GET_FEATURES: the virtio features the backend offers.</summary>
    public async Task<ulong> GetFeaturesAsync(CancellationToken cancellationToken = default) =>
        U64Payload.Read(await RequestAsync(FrontendRequest.GetFeatures, [], [], U64Payload.Size, cancellationToken).ConfigureAwait(false));

    /// <summary>SET_FEATURES.</summary>
    public Task SetFeaturesAsync(ulong features, CancellationToken cancellationToken = default) =>
        CommandAsync(FrontendRequest.SetFeatures, U64Payload.Encode(features), [], cancellationToken);

    /// <summary>GET_PROTOCOL_FEATURES.</summary>
    public async Task<VhostUserProtocolFeatures> GetProtocolFeaturesAsync(CancellationToken cancellationToken = default) =>
        (VhostUserProtocolFeatures)U64Payload.Read(await RequestAsync(FrontendRequest.GetProtocolFeatures, [], [], U64Payload.Size, cancellationToken).ConfigureAwait(false));

    /// <summary>SET_PROTOCOL_FEATURES. From then on REPLY_ACK (if included) is used for every command.</summary>
    public async Task SetProtocolFeaturesAsync(VhostUserProtocolFeatures features, CancellationToken cancellationToken = default)
    {
        await CommandAsync(FrontendRequest.SetProtocolFeatures, U64Payload.Encode((ulong)features), [], cancellationToken).ConfigureAwait(false);
        AckedProtocolFeatures = features;
    }

    /// <summary>SET_OWNER.</summary>
    public Task SetOwnerAsync(CancellationToken cancellationToken = default) => CommandAsync(FrontendRequest.SetOwner, [], [], cancellationToken);

    /// <summary>RESET_OWNER (deprecated in the spec).</summary>
    public Task ResetOwnerAsync(CancellationToken cancellationToken = default) => CommandAsync(FrontendRequest.ResetOwner, [], [], cancellationToken);

    /// <summary>RESET_DEVICE.</summary>
    public Task ResetDeviceAsync(CancellationToken cancellationToken = default) => CommandAsync(FrontendRequest.ResetDevice, [], [], cancellationToken);

    /// <summary>GET_QUEUE_NUM (needs MQ).</summary>
    public async Task<ulong> GetQueueNumAsync(CancellationToken cancellationToken = default) =>
        U64Payload.Read(await RequestAsync(FrontendRequest.GetQueueNum, [], [], U64Payload.Size, cancellationToken).ConfigureAwait(false));

    /// <summary>GET_MAX_MEM_SLOTS (needs CONFIGURE_MEM_SLOTS).</summary>
    public async Task<ulong> GetMaxMemSlotsAsync(CancellationToken cancellationToken = default) =>
        U64Payload.Read(await RequestAsync(FrontendRequest.GetMaxMemSlots, [], [], U64Payload.Size, cancellationToken).ConfigureAwait(false));

    /// <summary>SET_MEM_TABLE with up to 8 regions; their fds are sent along.</summary>
    public Task SetMemTableAsync(IReadOnlyList<GuestMemory> regions, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(regions);
        var descriptions = regions.Select(Describe).ToArray();
        int[] fds = regions.Select(r => r.Fd).ToArray();
        return CommandAsync(FrontendRequest.SetMemTable, MemoryTablePayload.Encode(descriptions), fds, cancellationToken);
    }

    /// <summary>ADD_MEM_REG (needs CONFIGURE_MEM_SLOTS).</summary>
    public Task AddMemoryRegionAsync(GuestMemory region, CancellationToken cancellationToken = default) =>
        CommandAsync(FrontendRequest.AddMemReg, SingleRegionPayload.Encode(Describe(region)), [region.Fd], cancellationToken);

    /// <summary>REM_MEM_REG (needs CONFIGURE_MEM_SLOTS).</summary>
    public Task RemoveMemoryRegionAsync(GuestMemory region, CancellationToken cancellationToken = default) =>
        CommandAsync(FrontendRequest.RemMemReg, SingleRegionPayload.Encode(Describe(region)), [], cancellationToken);

    private static MemoryRegionPayload Describe(GuestMemory m) => new(m.GuestPhysicalAddress, m.Size, m.FrontendAddress, m.MmapOffset);

    /// <summary>SET_LOG_BASE (needs LOG_SHMFD): hands the backend a dirty-page log; waits for its reply.</summary>
    public async Task SetLogBaseAsync(DirtyPageLog log, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(log);
        byte[] reply = await RequestAsync(FrontendRequest.SetLogBase, new LogDescriptionPayload(log.Size, 0).Encode(), [log.Fd], -1, cancellationToken).ConfigureAwait(false);
        if (reply.Length == U64Payload.Size && U64Payload.Read(reply) != 0)
        {
            throw new VhostUserRequestException("SET_LOG_BASE", "backend refused the log");
        }
    }

    /// <summary>
    /// GET_INFLIGHT_FD (INFLIGHT_SHMFD): asks the backend for a buffer tracking in-flight requests of
    /// <paramref name="queueCount"/> queues of <paramref name="queueSize"/> entries. Null when the backend
    /// answers with an empty description (it cannot provide one).
    /// </summary>
    /// <exception cref="VhostUserRequestException">The reply is malformed or carries no fd.</exception>
    public async Task<InflightBuffer?> GetInflightFdAsync(int queueCount, int queueSize, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(queueCount);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(queueCount, ushort.MaxValue);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(queueSize);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(queueSize, ushort.MaxValue);
        byte[] request = new InflightDescriptionPayload(0, 0, (ushort)queueCount, (ushort)queueSize).Encode();
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        FileDescriptor? fd = null;
        byte[] reply;
        try
        {
            _connection.Send((uint)FrontendRequest.GetInflightFd, MessageHeader.Version, request);
            reply = await ReadReplyAsync(FrontendRequest.GetInflightFd, InflightDescriptionPayload.Size, cancellationToken, m => fd = m.FdCount > 0 ? m.TakeFd(0) : null).ConfigureAwait(false);
        }
        finally
        {
            _gate.Release();
        }

        var d = InflightDescriptionPayload.Read(reply);
        if (d.MmapSize == 0)
        {
            fd?.Dispose();
            return null;
        }

        if (fd is null)
        {
            throw new VhostUserRequestException("GET_INFLIGHT_FD", $"reply describes {d.MmapSize} bytes but carries no fd");
        }

        MemoryMapping? mapping = d.MmapSize > int.MaxValue || d.MmapOffset > int.MaxValue ? null : MemoryMapping.TryMap(fd.Value, d.MmapOffset + d.MmapSize, out _);
        if (mapping is null)
        {
            fd.Dispose();
            throw new VhostUserRequestException("GET_INFLIGHT_FD", $"cannot map {d.MmapSize} bytes at offset {d.MmapOffset}");
        }

        return new InflightBuffer(fd, mapping, d.MmapSize, d.MmapOffset, d.NumQueues, d.QueueSize);
    }

    /// <summary>SET_INFLIGHT_FD: hands a buffer obtained earlier (possibly from a previous backend process) to the backend.</summary>
    public Task SetInflightFdAsync(InflightBuffer buffer, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        byte[] payload = new InflightDescriptionPayload(buffer.Size, buffer.Offset, buffer.QueueCount, buffer.QueueSize).Encode();
        return CommandAsync(FrontendRequest.SetInflightFd, payload, [buffer.Fd], cancellationToken);
    }

    /// <summary>
    /// Device state transfer, save direction (DEVICE_STATE): SET_DEVICE_STATE_FD with the write end of a
    /// pipe, read the backend's state blob to EOF, then CHECK_DEVICE_STATE. Every ring must be stopped.
    /// </summary>
    /// <exception cref="VhostUserRequestException">The backend refused or reported a failed transfer.</exception>
    public async Task<byte[]> SaveDeviceStateAsync(CancellationToken cancellationToken = default)
    {
        var (read, write) = Libc.Pipe();
        using var reader = new FileStream(new Microsoft.Win32.SafeHandles.SafeFileHandle(read, ownsHandle: true), FileAccess.Read, 1);
        using (var writeEnd = new FileDescriptor(write))
        {
            await StartDeviceStateAsync(0, writeEnd.Value, cancellationToken).ConfigureAwait(false);
        }

        using var blob = new MemoryStream();
        await reader.CopyToAsync(blob, cancellationToken).ConfigureAwait(false);
        await CheckDeviceStateAsync(cancellationToken).ConfigureAwait(false);
        return blob.ToArray();
    }

    /// <summary>Device state transfer, load direction: hands the backend a pipe, writes <paramref name="state"/> into it, then CHECK_DEVICE_STATE.</summary>
    /// <exception cref="VhostUserRequestException">The backend refused the state (truncated, corrupted, newer format...).</exception>
    public async Task LoadDeviceStateAsync(ReadOnlyMemory<byte> state, CancellationToken cancellationToken = default)
    {
        var (read, write) = Libc.Pipe();
        using (var readEnd = new FileDescriptor(read))
        {
            await StartDeviceStateAsync(1, readEnd.Value, cancellationToken).ConfigureAwait(false);
        }

        using (var writer = new FileStream(new Microsoft.Win32.SafeHandles.SafeFileHandle(write, ownsHandle: true), FileAccess.Write, 1))
        {
            await writer.WriteAsync(state, cancellationToken).ConfigureAwait(false);
        }

        await CheckDeviceStateAsync(cancellationToken).ConfigureAwait(false);
    }

    private async Task StartDeviceStateAsync(uint direction, int fd, CancellationToken cancellationToken)
    {
        var payload = new byte[DeviceStateTransferPayload.Size];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(payload, direction);
        ulong r = U64Payload.Read(await RequestAsync(FrontendRequest.SetDeviceStateFd, payload, [fd], U64Payload.Size, cancellationToken).ConfigureAwait(false));
        if ((r & 0xFF) != 0)
        {
            throw new VhostUserRequestException("SET_DEVICE_STATE_FD", $"backend refused the transfer (0x{r:x})");
        }
    }

    private async Task CheckDeviceStateAsync(CancellationToken cancellationToken)
    {
        ulong r = U64Payload.Read(await RequestAsync(FrontendRequest.CheckDeviceState, [], [], U64Payload.Size, cancellationToken).ConfigureAwait(false));
        if (r != 0)
        {
            throw new VhostUserRequestException("CHECK_DEVICE_STATE", "the backend reports the state transfer failed");
        }
    }

    /// <summary>SET_VRING_NUM.</summary>
    public Task SetVringNumAsync(int index, int size, CancellationToken cancellationToken = default) =>
        CommandAsync(FrontendRequest.SetVringNum, new VringStatePayload((uint)index, (uint)size).Encode(), [], cancellationToken);

    /// <summary>SET_VRING_ADDR. Addresses are frontend addresses (see <see cref="GuestMemory.ToFrontendAddress"/>).</summary>
    public Task SetVringAddrAsync(int index, ulong descriptor, ulong used, ulong available, bool log = false, ulong logGuestAddress = 0, CancellationToken cancellationToken = default) =>
        CommandAsync(FrontendRequest.SetVringAddr, new VringAddressPayload((uint)index, log ? VringAddressPayload.FlagLog : 0, descriptor, used, available, logGuestAddress).Encode(), [], cancellationToken);

    /// <summary>SET_VRING_BASE.</summary>
    public Task SetVringBaseAsync(int index, uint nextAvailable, CancellationToken cancellationToken = default) =>
        CommandAsync(FrontendRequest.SetVringBase, new VringStatePayload((uint)index, nextAvailable).Encode(), [], cancellationToken);

    /// <summary>GET_VRING_BASE: stops the ring and returns where it would resume.</summary>
    public async Task<uint> GetVringBaseAsync(int index, CancellationToken cancellationToken = default)
    {
        byte[] reply = await RequestAsync(FrontendRequest.GetVringBase, new VringStatePayload((uint)index, 0).Encode(), [], VringStatePayload.Size, cancellationToken).ConfigureAwait(false);
        var state = VringStatePayload.Read(reply);
        if (state.Index != (uint)index)
        {
            throw new VhostUserRequestException("GET_VRING_BASE", $"reply names ring {state.Index}, expected {index}");
        }

        return state.Num;
    }

    /// <summary>SET_VRING_KICK; null means "no fd" (the backend polls).</summary>
    public Task SetVringKickAsync(int index, EventNotifier? kick, CancellationToken cancellationToken = default) =>
        VringFileAsync(FrontendRequest.SetVringKick, index, kick, cancellationToken);

    /// <summary>SET_VRING_CALL; null means "no fd" (no interrupts wanted).</summary>
    public Task SetVringCallAsync(int index, EventNotifier? call, CancellationToken cancellationToken = default) =>
        VringFileAsync(FrontendRequest.SetVringCall, index, call, cancellationToken);

    /// <summary>SET_VRING_ERR; null means "no fd".</summary>
    public Task SetVringErrAsync(int index, EventNotifier? err, CancellationToken cancellationToken = default) =>
        VringFileAsync(FrontendRequest.SetVringErr, index, err, cancellationToken);

    private Task VringFileAsync(FrontendRequest request, int index, EventNotifier? notifier, CancellationToken cancellationToken) =>
        CommandAsync(request, U64Payload.Encode(VringFileWord.Make(index, notifier is null)), notifier is null ? [] : [notifier.Fd], cancellationToken);

    /// <summary>SET_VRING_ENABLE.</summary>
    public Task SetVringEnableAsync(int index, bool enable, CancellationToken cancellationToken = default) =>
        CommandAsync(FrontendRequest.SetVringEnable, new VringStatePayload((uint)index, enable ? 1u : 0u).Encode(), [], cancellationToken);

    /// <summary>GET_CONFIG (needs CONFIG): <paramref name="size"/> bytes of config space from <paramref name="offset"/>.</summary>
    public async Task<byte[]> GetConfigAsync(uint offset, uint size, CancellationToken cancellationToken = default)
    {
        var header = new DeviceConfigHeader(offset, size, 0);
        byte[] reply = await RequestAsync(FrontendRequest.GetConfig, header.Encode(new byte[size]), [], -1, cancellationToken).ConfigureAwait(false);
        if (reply.Length != DeviceConfigHeader.Length + size)
        {
            throw new VhostUserRequestException("GET_CONFIG", $"backend refused (reply of {reply.Length} bytes)");
        }

        return reply[DeviceConfigHeader.Length..];
    }

    /// <summary>SET_CONFIG (needs CONFIG).</summary>
    public Task SetConfigAsync(uint offset, ReadOnlyMemory<byte> data, bool migration = false, CancellationToken cancellationToken = default) =>
        CommandAsync(FrontendRequest.SetConfig, new DeviceConfigHeader(offset, (uint)data.Length, migration ? DeviceConfigHeader.FlagMigration : 0).Encode(data.Span), [], cancellationToken);

    /// <summary>SET_STATUS (needs STATUS).</summary>
    public Task SetStatusAsync(DeviceStatus status, CancellationToken cancellationToken = default) =>
        CommandAsync(FrontendRequest.SetStatus, U64Payload.Encode((ulong)status), [], cancellationToken);

    /// <summary>GET_STATUS (needs STATUS).</summary>
    public async Task<DeviceStatus> GetStatusAsync(CancellationToken cancellationToken = default) =>
        (DeviceStatus)U64Payload.Read(await RequestAsync(FrontendRequest.GetStatus, [], [], U64Payload.Size, cancellationToken).ConfigureAwait(false));

    /// <summary>SET_BACKEND_REQ_FD (needs BACKEND_REQ): sends one end of a new socket pair and returns the other end, on which the backend's requests arrive.</summary>
    public async Task<Socket> SetBackendReqFdAsync(CancellationToken cancellationToken = default)
    {
        var (mine, theirs) = Libc.SocketPair();
        using var theirsFd = new FileDescriptor(theirs);
        var socket = new Socket(new SafeSocketHandle(mine, ownsHandle: true));
        try
        {
            await CommandAsync(FrontendRequest.SetBackendReqFd, [], [theirs], cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            socket.Dispose();
            throw;
        }

        return socket;
    }

    /// <summary>
    /// The usual opening: GET_FEATURES, GET/SET_PROTOCOL_FEATURES (offer ∩ <paramref name="protocolFeatures"/>),
    /// SET_OWNER, SET_FEATURES (offer ∩ <paramref name="features"/>, plus VHOST_USER_F_PROTOCOL_FEATURES if offered).
    /// VHOST_F_LOG_ALL is never acked here: like QEMU, a frontend turns it on for a migration with
    /// <see cref="SetFeaturesAsync"/> after <see cref="SetLogBaseAsync"/> has installed a log. Returns the acked virtio features.
    /// </summary>
    public async Task<ulong> NegotiateAsync(ulong features, VhostUserProtocolFeatures protocolFeatures, CancellationToken cancellationToken = default)
    {
        ulong offered = await GetFeaturesAsync(cancellationToken).ConfigureAwait(false);
        if ((offered & VirtioFeatureBits.ProtocolFeatures) != 0)
        {
            var offeredProtocol = await GetProtocolFeaturesAsync(cancellationToken).ConfigureAwait(false);
            await SetProtocolFeaturesAsync(offeredProtocol & protocolFeatures, cancellationToken).ConfigureAwait(false);
        }

        await SetOwnerAsync(cancellationToken).ConfigureAwait(false);
        ulong acked = (offered & features & ~VirtioFeatureBits.LogAll) | (offered & VirtioFeatureBits.ProtocolFeatures);
        await SetFeaturesAsync(acked, cancellationToken).ConfigureAwait(false);
        return acked;
    }

    private async Task CommandAsync(FrontendRequest request, byte[] payload, int[] fds, CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            bool needReply = ReplyAck;
            _connection.Send((uint)request, MessageHeader.Version | (needReply ? MessageHeader.NeedReplyFlag : 0), payload, fds);
            if (!needReply)
            {
                return;
            }

            byte[] ack = await ReadReplyAsync(request, U64Payload.Size, cancellationToken).ConfigureAwait(false);
            ulong status = U64Payload.Read(ack);
            if (status != 0)
            {
                throw new VhostUserRequestException(RequestNames.Name(request), $"backend refused the request (ack {status})");
            }
        }
        finally
        {
            _gate.Release();
        }
    }

    private async Task<byte[]> RequestAsync(FrontendRequest request, byte[] payload, int[] fds, int expectedSize, CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            _connection.Send((uint)request, MessageHeader.Version, payload, fds);
            return await ReadReplyAsync(request, expectedSize, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _gate.Release();
        }
    }

    private async Task<byte[]> ReadReplyAsync(FrontendRequest request, int expectedSize, CancellationToken cancellationToken, Action<VhostUserMessage>? takeFds = null)
    {
        string name = RequestNames.Name(request);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(ReplyTimeout);
        VhostUserMessage? reply;
        try
        {
            reply = await _connection.ReceiveAsync(timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new VhostUserRequestException(name, $"no reply within {ReplyTimeout.TotalSeconds:0.#} s");
        }
        catch (VhostUserFramingException ex)
        {
            throw new VhostUserRequestException(name, ex.Message);
        }

        if (reply is null)
        {
            throw new VhostUserRequestException(name, "the backend closed the connection");
        }

        using (reply)
        {
            if (reply.Header.Request != (uint)request || reply.Header.Flags != MessageHeader.ReplyFlags)
            {
                throw new VhostUserRequestException(name, $"unexpected reply {RequestNames.Name(reply.Header.Request)} flags 0x{reply.Header.Flags:x}");
            }

            if (expectedSize >= 0 && reply.Payload.Length != expectedSize)
            {
                throw new VhostUserRequestException(name, $"reply payload of {reply.Payload.Length} bytes, expected {expectedSize}");
            }

            takeFds?.Invoke(reply);
            return reply.Payload;
        }
    }

    /// <summary>Closes the connection.</summary>
    public async ValueTask DisposeAsync()
    {
        await _connection.DisposeAsync().ConfigureAwait(false);

        _gate.Dispose();
    }
}
