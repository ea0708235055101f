using System.Buffers.Binary;
using System.Diagnostics;
using VhostCompat.Frontend;
using VhostCompat.IntegrationTests.Support;
using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.IntegrationTests;

/// <summary>
/// samples/Net <c>--responder IP</c> run as a process and driven by the C# frontend: frames written by hand into the
/// TX ring, answers read back from the RX ring. The migration matrix interop test relies on it to keep a guest pinging.
/// </summary>
public sealed class NetResponderSampleTests : IAsyncLifetime
{
    private const int HeaderLength = 12; // virtio_net_hdr_v1 (VERSION_1 | MRG_RXBUF)
    private const int RingSize = 64;
    private const int RxBufferLength = 2048;
    private static readonly byte[] GuestMac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    private static readonly byte[] GuestIp = [10, 0, 0, 2];
    private static readonly byte[] ResponderIp = [10, 0, 0, 1];
    private static readonly byte[] ResponderMac = [0x02, 0x76, 10, 0, 0, 1];

    private readonly string _dir = Directory.CreateTempSubdirectory("vhostcompat-net-").FullName;
    private readonly Dictionary<uint, ulong> _rxBuffers = [];
    private Process? _backend;
    private VhostUserFrontend? _fe;
    private GuestMemory? _mem;
    private SplitRingDriver? _rx;
    private SplitRingDriver? _tx;
    private EventNotifier? _rxKick;
    private EventNotifier? _txKick;
    private int _txNext;

    public Task InitializeAsync() => Task.CompletedTask;

    private async Task StartAsync(params string[] extra)
    {
        string sock = Path.Combine(_dir, "net.sock");
        _backend = SampleLauncher.Start("Net", ["--socket-path", sock, "--build", "1", "--responder", "10.0.0.1", "--log-level", "Warning", .. extra]);
        await SampleLauncher.WaitForSocketAsync(_backend, sock, TimeSpan.FromSeconds(30));

        _fe = await VhostUserFrontend.ConnectAsync(sock);
        ulong acked = await _fe.NegotiateAsync(VirtioFeatureBits.Version1 | VirtioFeatureBits.NetMrgRxbuf, (VhostUserProtocolFeatures)ulong.MaxValue);
        (acked & (VirtioFeatureBits.Version1 | VirtioFeatureBits.NetMrgRxbuf)).Should().Be(VirtioFeatureBits.Version1 | VirtioFeatureBits.NetMrgRxbuf);
        _mem = new GuestMemory(0, 8 << 20);
        await _fe.SetMemTableAsync([_mem]);
        _rx = new SplitRingDriver(_mem, 0, RingSize);
        _tx = new SplitRingDriver(_mem, 4 << 20, RingSize);
        _rxKick = new EventNotifier();
        _txKick = new EventNotifier();
        await _rx.ConfigureAsync(_fe, 0, _rxKick, null);
        await _tx.ConfigureAsync(_fe, 1, _txKick, null);
        await _fe.SetVringEnableAsync(0, true);
        await _fe.SetVringEnableAsync(1, true);

        // Post RX buffers: one writable descriptor each.
        for (int i = 0; i < RingSize; i++)
        {
            ulong addr = _rx.Allocate(RxBufferLength);
            _rx.WriteDescriptor(i, addr, RxBufferLength, 2, 0);
            _rxBuffers[(uint)i] = addr;
            _rx.Publish((ushort)i);
        }

        _rxKick.Signal();
    }

    /// <summary>Sends one frame from the "guest" (a single readable descriptor: header + frame).</summary>
    private void Send(ReadOnlySpan<byte> frame)
    {
        var buffer = new byte[HeaderLength + frame.Length];
        frame.CopyTo(buffer.AsSpan(HeaderLength));
        int idx = _txNext++ % RingSize;
        ulong addr = _tx!.Allocate(buffer.Length);
        _mem!.Write(addr, buffer);
        _tx.WriteDescriptor(idx, addr, (uint)buffer.Length, 0, 0);
        _tx.Publish((ushort)idx);
        _txKick!.Signal();
    }

    /// <summary>The next frame delivered to the "guest" (without the virtio-net header).</summary>
    private async Task<byte[]> ReceiveAsync()
    {
        var (id, len) = (await _rx!.WaitUsedAsync(1)).Single();
        len.Should().BeGreaterThan(HeaderLength);
        var data = new byte[len];
        _mem!.Read(_rxBuffers[id], data);
        BinaryPrimitives.ReadUInt16LittleEndian(data.AsSpan(10)).Should().Be(1, "one buffer per frame (num_buffers)");
        return data[HeaderLength..];
    }

    private static byte[] ArpRequest(byte[] targetIp)
    {
        var f = new byte[42];
        f.AsSpan(0, 6).Fill(0xff);
        GuestMac.CopyTo(f, 6);
        f[12] = 0x08;
        f[13] = 0x06;
        byte[] arp = [0, 1, 0x08, 0x00, 6, 4, 0, 1];
        arp.CopyTo(f, 14);
        GuestMac.CopyTo(f, 22);
        GuestIp.CopyTo(f, 28);
        targetIp.CopyTo(f, 38);
        return f;
    }

    private static byte[] EchoRequest(ushort id, ushort seq, int payload, bool breakChecksum = false)
    {
        int icmpLength = 8 + payload;
        var f = new byte[14 + 20 + icmpLength];
        ResponderMac.CopyTo(f, 0);
        GuestMac.CopyTo(f, 6);
        f[12] = 0x08;
        var ip = f.AsSpan(14, 20);
        ip[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(ip[2..], (ushort)(20 + icmpLength));
        BinaryPrimitives.WriteUInt16BigEndian(ip[4..], 0xbeef);
        ip[6] = 0x40; // don't fragment
        ip[8] = 64;
        ip[9] = 1;
        GuestIp.CopyTo(ip[12..]);
        ResponderIp.CopyTo(ip[16..]);
        BinaryPrimitives.WriteUInt16BigEndian(ip[10..], InternetChecksum(ip));
        var icmp = f.AsSpan(34);
        icmp[0] = 8;
        BinaryPrimitives.WriteUInt16BigEndian(icmp[4..], id);
        BinaryPrimitives.WriteUInt16BigEndian(icmp[6..], seq);
        for (int i = 0; i < payload; i++)
        {
            icmp[8 + i] = (byte)(i * 7);
        }

        BinaryPrimitives.WriteUInt16BigEndian(icmp[2..], InternetChecksum(icmp));
        if (breakChecksum)
        {
            icmp[2] ^= 0x55;
        }

        return f;
    }

    /// <summary>RFC 1071, written independently of the sample's.</summary>
    private static ushort InternetChecksum(ReadOnlySpan<byte> data)
    {
        long sum = 0;
        for (int i = 0; i < data.Length; i += 2)
        {
            sum += (data[i] << 8) | (i + 1 < data.Length ? data[i + 1] : 0);
        }

        while ((sum >> 16) != 0)
        {
            sum = (sum & 0xffff) + (sum >> 16);
        }

        return (ushort)~sum;
    }

    [Fact]
    public async Task Answers_an_ARP_request_for_its_address_with_a_stable_MAC()
    {
        await StartAsync();
        Send(ArpRequest(ResponderIp));
        var reply = await ReceiveAsync();

        reply.Length.Should().BeGreaterThanOrEqualTo(42);
        reply.AsSpan(0, 6).ToArray().Should().Equal(GuestMac, "sent back to the asker");
        reply.AsSpan(6, 6).ToArray().Should().Equal(ResponderMac, "02:76 + the IPv4 address");
        BinaryPrimitives.ReadUInt16BigEndian(reply.AsSpan(12)).Should().Be(0x0806);
        BinaryPrimitives.ReadUInt16BigEndian(reply.AsSpan(20)).Should().Be(2, "an ARP reply");
        reply.AsSpan(22, 6).ToArray().Should().Equal(ResponderMac);
        reply.AsSpan(28, 4).ToArray().Should().Equal(ResponderIp);
        reply.AsSpan(32, 6).ToArray().Should().Equal(GuestMac);
        reply.AsSpan(38, 4).ToArray().Should().Equal(GuestIp);
    }

    [Fact]
    public async Task The_port_s_learned_MACs_and_counters_travel_as_device_state()
    {
        await StartAsync();
        Send(ArpRequest(ResponderIp)); // the switch learns the guest's MAC on this port
        await ReceiveAsync();
        await _fe!.GetVringBaseAsync(0); // state is consistent only with every ring stopped
        await _fe.GetVringBaseAsync(1);

        var (macs, counters) = DecodeState(await _fe.SaveDeviceStateAsync());
        macs.Should().Equal(Convert.ToHexString(GuestMac));
        counters[0].Should().Be(1, "one frame sent by the guest");
        counters[2].Should().Be(1, "one frame delivered to it");

        // A destination loads the source's table: it knows the migrated guest's MAC before the guest speaks.
        byte[] migrated = [0, 0, .. new byte[] { 0x52, 0x54, 0x00, 0xAA, 0xBB, 0xCC }, .. new byte[32]];
        BinaryPrimitives.WriteUInt16LittleEndian(migrated, 1);
        BinaryPrimitives.WriteInt64LittleEndian(migrated.AsSpan(8), 500);
        await _fe.LoadDeviceStateAsync(VhostCompat.Backend.DeviceStateBlob.Wrap(1, 1, migrated));
        (macs, counters) = DecodeState(await _fe.SaveDeviceStateAsync());
        macs.Should().Contain("525400AABBCC");
        counters[0].Should().Be(500);

        // A multicast address is never learned: such a blob is refused, and so is a newer format.
        migrated[2] = 0x01;
        var multicast = () => _fe.LoadDeviceStateAsync(VhostCompat.Backend.DeviceStateBlob.Wrap(1, 1, migrated));
        await multicast.Should().ThrowAsync<VhostUserRequestException>();
        var newer = () => _fe.LoadDeviceStateAsync(VhostCompat.Backend.DeviceStateBlob.Wrap(1, 2, migrated));
        await newer.Should().ThrowAsync<VhostUserRequestException>();
    }

    [Fact]
    public async Task A_build_with_another_state_version_writes_it_and_refuses_a_version_1_blob()
    {
        await StartAsync("--state-version", "2");
        Send(ArpRequest(ResponderIp));
        await ReceiveAsync();
        await _fe!.GetVringBaseAsync(0);
        await _fe.GetVringBaseAsync(1);

        byte[] saved = await _fe.SaveDeviceStateAsync();
        VhostCompat.Backend.DeviceStateBlob.TryUnwrap(saved, 1, out uint version, out ReadOnlySpan<byte> payload).Should().BeNull();
        version.Should().Be(2, "--state-version 2 writes its own format number");
        byte[] state = payload.ToArray();

        // The version-1 blob a default build sends is refused; its own version is taken.
        var v1 = () => _fe.LoadDeviceStateAsync(VhostCompat.Backend.DeviceStateBlob.Wrap(1, 1, state));
        await v1.Should().ThrowAsync<VhostUserRequestException>();
        await _fe.LoadDeviceStateAsync(VhostCompat.Backend.DeviceStateBlob.Wrap(1, 2, state));
    }

    [Theory]
    [InlineData("--state-version", "0", "--state-version must be a positive integer")]
    [InlineData("--state-version", "x", "--state-version must be a positive integer")]
    [InlineData("--build", "x", "--build: The input string 'x' was not in a correct format.")]
    [InlineData("--log-level", "loud", "--log-level: Requested value 'loud' was not found.")]
    public async Task A_bad_option_value_gives_one_line_and_exit_code_2(string option, string value, string line)
    {
        using var p = SampleLauncher.Start("Net", "--socket-path", Path.Combine(_dir, "x.sock"), option, value);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await p.WaitForExitAsync(cts.Token);
        p.ExitCode.Should().Be(2);
        (await p.StandardError.ReadToEndAsync()).Should().Be(line + Environment.NewLine);
    }

    private static (List<string> Macs, long[] Counters) DecodeState(byte[] blob)
    {
        VhostCompat.Backend.DeviceStateBlob.TryUnwrap(blob, 1, out uint version, out ReadOnlySpan<byte> state).Should().BeNull();
        version.Should().Be(1);
        int count = BinaryPrimitives.ReadUInt16LittleEndian(state);
        state.Length.Should().Be(2 + (6 * count) + 32);
        var macs = new List<string>();
        for (int i = 0; i < count; i++)
        {
            macs.Add(Convert.ToHexString(state.Slice(2 + (6 * i), 6)));
        }

        var counters = new long[4];
        for (int k = 0; k < 4; k++)
        {
            counters[k] = BinaryPrimitives.ReadInt64LittleEndian(state[(2 + (6 * count) + (8 * k))..]);
        }

        return (macs, counters);
    }

    [Fact]
    public async Task Answers_a_ping_with_a_correct_echo_reply()
    {
        await StartAsync();
        var request = EchoRequest(0x1234, 7, 56);
        Send(request);
        var reply = await ReceiveAsync();

        reply.AsSpan(0, 6).ToArray().Should().Equal(GuestMac);
        reply.AsSpan(6, 6).ToArray().Should().Equal(ResponderMac);
        BinaryPrimitives.ReadUInt16BigEndian(reply.AsSpan(12)).Should().Be(0x0800);
        var ip = reply.AsSpan(14, 20);
        (ip[0] >> 4).Should().Be(4);
        int total = BinaryPrimitives.ReadUInt16BigEndian(ip[2..]);
        total.Should().Be(20 + 8 + 56);
        ip[9].Should().Be(1);
        ip.Slice(12, 4).ToArray().Should().Equal(ResponderIp);
        ip.Slice(16, 4).ToArray().Should().Equal(GuestIp);
        InternetChecksum(ip).Should().Be(0, "the IP header checksum is valid");
        var icmp = reply.AsSpan(34, total - 20);
        icmp[0].Should().Be(0, "echo reply");
        icmp[1].Should().Be(0);
        InternetChecksum(icmp).Should().Be(0, "the ICMP checksum is valid");
        icmp[4..].ToArray().Should().Equal(request.AsSpan(38).ToArray(), "identifier, sequence and payload are echoed");
    }

    [Fact]
    public async Task Ignores_other_addresses_and_damaged_requests_and_reports_its_counters_on_exit()
    {
        await StartAsync();
        Send(ArpRequest([10, 0, 0, 9]));           // someone else's address
        Send(EchoRequest(1, 1, 32, breakChecksum: true));
        Send(EchoRequest(1, 2, 32));               // the first answer must be to this one
        var reply = await ReceiveAsync();
        BinaryPrimitives.ReadUInt16BigEndian(reply.AsSpan(12)).Should().Be(0x0800);
        reply[34].Should().Be(0, "echo reply");
        BinaryPrimitives.ReadUInt16BigEndian(reply.AsSpan(34 + 6)).Should().Be(2, "only the intact request to 10.0.0.1 was answered");

        await _fe!.DisposeAsync();
        _fe = null;
        using (var kill = Process.Start("kill", ["-TERM", _backend!.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]))
        {
            await kill.WaitForExitAsync();
        }

        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        await _backend.WaitForExitAsync(cts.Token);
        string stdout = await _backend.StandardOutput.ReadToEndAsync();
        stdout.Should().Contain("responder 10.0.0.1 at 02:76:0a:00:00:01 answers ARP and ping");
        stdout.Should().Contain("responder 10.0.0.1: arp_replies=0 echo_replies=1 ignored=2");
    }

    [Fact]
    public async Task Refuses_a_non_IPv4_responder_address()
    {
        using var p = SampleLauncher.Start("Net", "--socket-path", Path.Combine(_dir, "x.sock"), "--responder", "fe80::1");
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await p.WaitForExitAsync(cts.Token);
        p.ExitCode.Should().Be(2);
        (await p.StandardError.ReadToEndAsync()).Should().Contain("--responder needs an IPv4 address");
    }

    public async Task DisposeAsync()
    {
        if (_fe is not null)
        {
            await _fe.DisposeAsync();
        }

        _rxKick?.Dispose();
        _txKick?.Dispose();
        _mem?.Dispose();
        if (_backend is { HasExited: false })
        {
            _backend.Kill();
            await _backend.WaitForExitAsync();
        }

        _backend?.Dispose();
        Directory.Delete(_dir, recursive: true);
    }
}
