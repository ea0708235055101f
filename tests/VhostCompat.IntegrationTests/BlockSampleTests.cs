using System.Buffers.Binary;
using System.Diagnostics;
using VhostCompat.Frontend;
using VhostCompat.IntegrationTests.Support;
using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.IntegrationTests;

/// <summary>
/// samples/Block run as a process, as a user would, driven by the C# frontend with hand-built
/// virtio-blk requests — including the guest-controlled bad ones.
/// </summary>
public sealed class BlockSampleTests : IAsyncLifetime
{
    private const byte Ok = 0, IoErr = 1, Unsupported = 2;
    private readonly string _dir = Directory.CreateTempSubdirectory("vhostcompat-blk-").FullName;
    private Process? _backend;
    private VhostUserFrontend? _fe;
    private GuestMemory? _mem;
    private SplitRingDriver? _ring;
    private EventNotifier? _kick;
    private int _nextDesc;

    private string Image => Path.Combine(_dir, "disk.img");

    public Task InitializeAsync() => Task.CompletedTask;

    private async Task StartAsync(bool readOnly = false)
    {
        if (!File.Exists(Image))
        {
            await File.WriteAllBytesAsync(Image, new byte[1 << 20]);
        }

        string sock = Path.Combine(_dir, "blk.sock");
        _backend = SampleLauncher.Start("Block", new[] { "--socket-path", sock, "--image", Image, "--log-level", "Warning" }.Concat(readOnly ? ["--read-only"] : Array.Empty<string>()).ToArray());
        await SampleLauncher.WaitForSocketAsync(_backend, sock, TimeSpan.FromSeconds(20));

        _fe = await VhostUserFrontend.ConnectAsync(sock);
        await _fe.NegotiateAsync(ulong.MaxValue & ~VirtioFeatureBits.RingPacked, (VhostUserProtocolFeatures)ulong.MaxValue); // the driver below lays out a split ring
        _mem = new GuestMemory(0, 8 << 20);
        await _fe.SetMemTableAsync([_mem]);
        _ring = new SplitRingDriver(_mem, 0, 64);
        _kick = new EventNotifier();
        await _ring.ConfigureAsync(_fe, 0, _kick, null);
        await _fe.SetVringEnableAsync(0, true);
    }

    /// <summary>Sends one request: header (+ optional out data) readable, then data-in and a status byte writable. Returns (status, used length, data read).</summary>
    private async Task<(byte Status, uint Used, byte[] Data)> RequestAsync(uint type, ulong sector, byte[]? outData = null, int inLength = 0, bool statusByte = true, int headerLength = 16)
    {
        var ring = _ring!;
        var header = new byte[headerLength];
        if (headerLength >= 16)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(header, type);
            BinaryPrimitives.WriteUInt64LittleEndian(header.AsSpan(8), sector);
        }

        var parts = new List<(ulong Addr, int Len, bool Write)>();
        ulong h = ring.Allocate(header.Length);
        _mem!.Write(h, header);
        parts.Add((h, header.Length, false));
        if (outData is not null)
        {
            ulong d = ring.Allocate(outData.Length);
            _mem.Write(d, outData);
            parts.Add((d, outData.Length, false));
        }

        ulong inAddr = 0;
        if (inLength > 0)
        {
            inAddr = ring.Allocate(inLength);
            parts.Add((inAddr, inLength, true));
        }

        ulong statusAddr = 0;
        if (statusByte)
        {
            statusAddr = ring.Allocate(1);
            _mem.Write(statusAddr, [0xEE]);
            parts.Add((statusAddr, 1, true));
        }

        ushort head = (ushort)(_nextDesc % 64);
        for (int i = 0; i < parts.Count; i++)
        {
            int idx = (_nextDesc + i) % 64;
            ring.WriteDescriptor(idx, parts[i].Addr, (uint)parts[i].Len, (ushort)((parts[i].Write ? 2 : 0) | (i + 1 < parts.Count ? 1 : 0)), (ushort)((idx + 1) % 64));
        }

        _nextDesc += parts.Count;
        ring.Publish(head);
        _kick!.Signal();
        var used = (await ring.WaitUsedAsync(1)).Single();
        used.Id.Should().Be(head);
        var status = new byte[1];
        if (statusByte)
        {
            _mem.Read(statusAddr, status);
        }

        var data = new byte[inLength];
        if (inLength > 0)
        {
            _mem.Read(inAddr, data);
        }

        return (status[0], used.Len, data);
    }

    [Fact]
    public async Task Write_then_read_round_trips_through_the_image_file()
    {
        await StartAsync();
        var pattern = Enumerable.Range(0, 4096).Select(i => (byte)(i * 7)).ToArray();
        (await RequestAsync(1, 8, outData: pattern)).Status.Should().Be(Ok);
        (await RequestAsync(4, 0)).Status.Should().Be(Ok, "flush");
        var read = await RequestAsync(0, 8, inLength: 4096);
        read.Status.Should().Be(Ok);
        read.Used.Should().Be(4097u, "data plus the status byte");
        read.Data.Should().Equal(pattern);
        byte[] onDisk = new byte[4096];
        using (var f = File.OpenRead(Image))
        {
            f.Seek(8 * 512, SeekOrigin.Begin);
            f.ReadExactly(onDisk);
        }

        onDisk.Should().Equal(pattern);
        var id = await RequestAsync(8, 0, inLength: 20);
        System.Text.Encoding.ASCII.GetString(id.Data).TrimEnd('\0').Should().Be("vhostcompat");
    }

    [Fact]
    public async Task The_counters_travel_as_device_state_and_a_newer_format_is_refused()
    {
        await StartAsync();
        (await RequestAsync(1, 8, outData: new byte[4096])).Status.Should().Be(Ok);
        (await RequestAsync(0, 8, inLength: 1024)).Status.Should().Be(Ok);
        (await _fe!.GetProtocolFeaturesAsync()).Should().HaveFlag(VhostUserProtocolFeatures.DeviceState);
        await _fe.GetVringBaseAsync(0); // state is consistent only with every ring stopped

        byte[] blob = await _fe.SaveDeviceStateAsync();
        Counters(blob).Should().Equal(2, 0, 1024, 4096, 0);

        // What a destination does: load the source's state; its own save then carries the source's counters.
        var migrated = new byte[40];
        BinaryPrimitives.WriteInt64LittleEndian(migrated, 1000);
        BinaryPrimitives.WriteInt64LittleEndian(migrated.AsSpan(24), 1 << 30);
        await _fe.LoadDeviceStateAsync(VhostCompat.Backend.DeviceStateBlob.Wrap(2, 1, migrated));
        Counters(await _fe.SaveDeviceStateAsync()).Should().Equal(1000, 0, 0, 1 << 30, 0);

        var newer = () => _fe.LoadDeviceStateAsync(VhostCompat.Backend.DeviceStateBlob.Wrap(2, 2, migrated));
        await newer.Should().ThrowAsync<VhostUserRequestException>("state version 2 is from a newer build");
        Counters(await _fe.SaveDeviceStateAsync()).Should().Equal(1000, 0, 0, 1 << 30, 0);
    }

    private static long[] Counters(byte[] blob)
    {
        VhostCompat.Backend.DeviceStateBlob.TryUnwrap(blob, 2, out uint version, out ReadOnlySpan<byte> payload).Should().BeNull();
        version.Should().Be(1);
        var values = new long[5];
        for (int i = 0; i < 5; i++)
        {
            values[i] = BinaryPrimitives.ReadInt64LittleEndian(payload[(8 * i)..]);
        }

        return values;
    }

    [Fact]
    public async Task Guest_controlled_bad_requests_get_the_right_status_and_touch_nothing_outside_the_image()
    {
        await StartAsync();
        long sizeBefore = new FileInfo(Image).Length;
        const ulong LastSector = (1 << 20) / 512 - 1;
        (await RequestAsync(0, LastSector, inLength: 1024)).Status.Should().Be(IoErr, "read past the end");
        (await RequestAsync(1, LastSector, outData: new byte[1024])).Status.Should().Be(IoErr, "write past the end");
        (await RequestAsync(0, ulong.MaxValue / 512 + 5, inLength: 512)).Status.Should().Be(IoErr, "sector * 512 overflows");
        (await RequestAsync(0, ulong.MaxValue, inLength: 512)).Status.Should().Be(IoErr);
        (await RequestAsync(99, 0)).Status.Should().Be(Unsupported, "unknown request type");
        (await RequestAsync(0, 0, inLength: 16, headerLength: 8)).Status.Should().Be(IoErr, "header shorter than 16 bytes");
        (await RequestAsync(1, 0, outData: new byte[512], statusByte: false)).Used.Should().Be(0u, "no status byte: nothing done, nothing written");
        var zeroes = new byte[16];
        BinaryPrimitives.WriteUInt64LittleEndian(zeroes, LastSector);
        BinaryPrimitives.WriteUInt32LittleEndian(zeroes.AsSpan(8), 2);
        (await RequestAsync(13, 0, outData: zeroes)).Status.Should().Be(IoErr, "write-zeroes range past the end");
        (await RequestAsync(1, LastSector, outData: new byte[512])).Status.Should().Be(Ok, "the device keeps serving; the last sector is writable");
        new FileInfo(Image).Length.Should().Be(sizeBefore, "nothing is written outside the file's range");
    }

    [Fact]
    public async Task A_read_only_disk_refuses_writes_and_keeps_its_data()
    {
        await File.WriteAllBytesAsync(Image, Enumerable.Repeat((byte)0x5A, 1 << 20).ToArray());
        await StartAsync(readOnly: true);
        (await RequestAsync(1, 0, outData: new byte[512])).Status.Should().Be(IoErr);
        (await RequestAsync(0, 0, inLength: 512)).Data.Should().OnlyContain(b => b == 0x5A);
        File.ReadAllBytes(Image).Should().OnlyContain(b => b == 0x5A);
    }

    public async Task DisposeAsync()
    {
        if (_fe is not null)
        {
            await _fe.DisposeAsync();
        }

        _kick?.Dispose();
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
