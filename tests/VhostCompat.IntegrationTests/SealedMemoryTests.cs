using System.Runtime.InteropServices;
using System.Text;
using VhostCompat.Frontend;
using VhostCompat.IntegrationTests.Support;
using VhostCompat.Interop;
using VhostCompat.Protocol;

namespace VhostCompat.IntegrationTests;

/// <summary>
/// A frontend that shrinks a guest-memory file after SET_MEM_TABLE must not be able to kill the backend (the next access
/// would raise SIGBUS, which aborts a .NET process): the backend seals every sealable memfd against shrinking when it maps it,
/// and refuses unsealable files when sealed memory is required.
/// </summary>
public sealed class SealedMemoryTests
{
    private const ulong MiB = 1 << 20;

    [Fact]
    public async Task A_frontend_cannot_truncate_guest_memory_once_mapped_and_every_queue_keeps_working()
    {
        await using var fx = new BackendFixture(new TestDevice(queues: 2));
        await fx.WaitListeningAsync();
        await using var fe = await VhostUserFrontend.ConnectAsync(fx.SocketPath);
        await fe.NegotiateAsync(ulong.MaxValue, (VhostUserProtocolFeatures)ulong.MaxValue);
        using var mem = new GuestMemory(0, 4 * MiB);
        Libc.GetSeals(mem.Fd, out _).Should().Be(0, "the C# frontend's memfd allows sealing and carries no seal of its own");
        await fe.SetMemTableAsync([mem]);

        // Queue 0 lives (with its buffers) in the first 2 MiB, queue 1 in the upper 2 MiB: the range a truncation would drop.
        var rings = new[] { new SplitRingDriver(mem, 0, 64), new SplitRingDriver(mem, 2 * MiB, 64) };
        var kicks = new[] { new EventNotifier(), new EventNotifier() };
        var calls = new[] { new EventNotifier(), new EventNotifier() };
        for (int q = 0; q < 2; q++)
        {
            await rings[q].ConfigureAsync(fe, q, kicks[q], calls[q]);
            await fe.SetVringEnableAsync(q, true);
        }

        int seals = Libc.GetSeals(mem.Fd, out _);
        (seals & Libc.F_SEAL_SHRINK).Should().NotBe(0, "the backend seals the region's memfd against shrinking when it maps it");
        fx.Logs.Text.Should().Contain("SealedByBackend");

        int truncated = Libc.Ftruncate(mem.Fd, (long)(2 * MiB));
        int errno = Marshal.GetLastPInvokeError();
        truncated.Should().Be(-1, "a sealed memfd cannot shrink");
        errno.Should().Be(1, "ftruncate on a file sealed with F_SEAL_SHRINK fails with EPERM");
        Libc.TryGetFileInfo(mem.Fd, out long size, out _, out _).Should().BeTrue();
        size.Should().Be((long)(4 * MiB));

        for (int round = 0; round < 3; round++)
        {
            for (int q = 0; q < 2; q++)
            {
                string text = $"queue {q} round {round}";
                ushort head = rings[q].AddRequest(Encoding.ASCII.GetBytes(text), 64);
                rings[q].LastWritable.Should().BeGreaterThanOrEqualTo((ulong)q * 2 * MiB);
                kicks[q].Signal();
                var used = await rings[q].WaitUsedAsync(1);
                used.Should().Equal([((uint)head, (uint)text.Length)]);
                var back = new byte[text.Length];
                mem.Read(rings[q].LastWritable, back);
                Encoding.ASCII.GetString(back).Should().Be(new string(text.Reverse().ToArray()));
            }
        }

        fx.Device.BrokenQueues.Should().BeEmpty();
        foreach (var e in kicks.Concat(calls))
        {
            e.Dispose();
        }
    }

    /// <summary>A memfd created without MFD_ALLOW_SEALING (seals = F_SEAL_SEAL), as DPDK 22.11 virtio-user --no-huge sends.</summary>
    private static FileDescriptor UnsealableMemfd(long size)
    {
        var fd = new FileDescriptor(Libc.MemfdCreate("vhostcompat-unsealable", Libc.MFD_CLOEXEC));
        Libc.Ftruncate(fd.Value, size).Should().Be(0);
        Libc.GetSeals(fd.Value, out _).Should().Be(Libc.F_SEAL_SEAL);
        return fd;
    }

    /// <summary>A tmpfs file opened by name (as a /dev/shm-backed frontend would share): its sealing is sealed too.</summary>
    private static FileDescriptor TmpfsFile(long size, string directory)
    {
        string path = Path.Combine(Directory.Exists("/dev/shm") ? "/dev/shm" : directory, $"vhostcompat-{Guid.NewGuid():N}");
        var handle = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.ReadWrite, FileOptions.DeleteOnClose);
        RandomAccess.SetLength(handle, size);
        int dup = Libc.Dup(checked((int)handle.DangerousGetHandle()));
        handle.Dispose();
        return new FileDescriptor(dup);
    }

    [Theory]
    [InlineData("memfd", false)]
    [InlineData("memfd", true)]
    [InlineData("tmpfs", false)]
    [InlineData("tmpfs", true)]
    public async Task An_unsealable_region_is_accepted_with_a_warning_or_refused_when_sealed_memory_is_required(string kind, bool requireSealed)
    {
        await using var fx = new BackendFixture(configure: o => o.RequireSealedMemory = requireSealed);
        await fx.WaitListeningAsync();
        await using var raw = await RawFrontend.ConnectAsync(fx.SocketPath);
        raw.Send(FrontendRequest.GetProtocolFeatures, needReply: false);
        ulong offered = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian((await raw.ReceiveAsync())!.Value.Payload);
        (await raw.AckAsync(FrontendRequest.SetProtocolFeatures, U64Payload.Encode(offered))).Should().Be(0);

        using var fd = kind == "memfd" ? UnsealableMemfd((long)MiB) : TmpfsFile((long)MiB, fx.Directory);
        ulong? reply = await raw.AckAsync(FrontendRequest.SetMemTable, MemoryTablePayload.Encode([new MemoryRegionPayload(0, MiB, 0x7000_0000, 0)]), [fd.Value]);
        if (requireSealed)
        {
            reply.Should().NotBe(0UL, "RequireSealedMemory refuses a file nobody can seal against shrinking");
            fx.Logs.Text.Should().Contain("cannot be sealed against shrinking").And.Contain("sealed memory is required");
            if (kind == "memfd")
            {
                fx.Logs.Text.Should().Contain("created without MFD_ALLOW_SEALING");
            }
        }
        else
        {
            reply.Should().Be(0UL, "by default the region is served (DPDK --no-huge sends such a memfd)");
            fx.Logs.Text.Should().Contain("cannot be sealed against shrinking: a frontend truncating it would crash this backend");
        }

        raw.Send(FrontendRequest.GetFeatures, needReply: false);
        (await raw.ReceiveAsync()).Should().NotBeNull("the session stays usable either way");
    }
}
