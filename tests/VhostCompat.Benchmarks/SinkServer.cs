using System.Diagnostics;
using System.Globalization;
using VhostCompat.Backend;
using VhostCompat.Queues;
using VhostCompat.Virtio;

namespace VhostCompat.Benchmarks;

/// <summary>
/// <c>sink-server --socket-path PATH [--seconds N] [--warmup N] [--busy-poll]</c>: a vhost-user-net backend that
/// pops and pushes every TX chain (exactly what samples/Net --sink does, same offered features) and measures
/// the managed allocations of the data path while a real frontend (DPDK virtio-user testpmd) drives it:
/// the worker thread's own allocation counter (GC.GetAllocatedBytesForCurrentThread, sampled at the end of every
/// kick handler), the process-wide total and the GC count, every second and for the whole window after warm-up.
/// </summary>
internal static class SinkServer
{
    public static async Task<int> RunAsync(string[] args)
    {
        string? path = null;
        int seconds = 10, warmup = 3;
        bool busyPoll = false;
        for (int i = 1; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--socket-path": path = args[++i]; break;
                case "--seconds": seconds = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--warmup": warmup = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--busy-poll": busyPoll = true; break;
                default: Console.Error.WriteLine($"unknown option {args[i]}"); return 2;
            }
        }

        if (path is null)
        {
            Console.Error.WriteLine("--socket-path is required");
            return 2;
        }

        using var stop = new CancellationTokenSource();
        using var sigterm = System.Runtime.InteropServices.PosixSignalRegistration.Create(
            System.Runtime.InteropServices.PosixSignal.SIGTERM, ctx => { ctx.Cancel = true; stop.Cancel(); });
        var device = new SinkDevice();
        using var workers = new VhostUserWorkerPool(1, busyPoll);
        var backend = new VhostUserBackend(device, new VhostUserBackendOptions { SocketPath = path, WorkerPool = workers });
        Task run = backend.RunAsync(stop.Token);

        // Wait for traffic, then sample once a second.
        while (Volatile.Read(ref device.Packets) == 0 && !stop.IsCancellationRequested)
        {
            await Task.Delay(50).ConfigureAwait(false);
        }

        long p0 = 0, w0 = 0, t0 = 0;
        int g0 = 0;
        long start = Stopwatch.GetTimestamp();
        for (int s = 1; s <= warmup + seconds && !stop.IsCancellationRequested; s++)
        {
            if (s == warmup + 1)
            {
                p0 = Volatile.Read(ref device.Packets);
                w0 = Volatile.Read(ref device.WorkerAllocated);
                t0 = GC.GetTotalAllocatedBytes(precise: true);
                g0 = GC.CollectionCount(0);
                start = Stopwatch.GetTimestamp();
            }

            try
            {
                await Task.Delay(1000, stop.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                break;
            }

            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"second={s} packets={Volatile.Read(ref device.Packets)} worker_alloc_bytes={Volatile.Read(ref device.WorkerAllocated)} process_alloc_bytes={GC.GetTotalAllocatedBytes(true)} gen0={GC.CollectionCount(0)} gen1={GC.CollectionCount(1)} gen2={GC.CollectionCount(2)}"));
        }

        double secs = Stopwatch.GetElapsedTime(start).TotalSeconds;
        long packets = Volatile.Read(ref device.Packets) - p0;
        long worker = Volatile.Read(ref device.WorkerAllocated) - w0;
        long total = GC.GetTotalAllocatedBytes(true) - t0;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"ALLOC window_s={secs:F2} packets={packets} mpps={packets / secs / 1e6:F3} worker_alloc_bytes={worker} worker_bytes_per_packet={(packets == 0 ? 0 : (double)worker / packets):F6} process_alloc_bytes={total} process_bytes_per_packet={(packets == 0 ? 0 : (double)total / packets):F6} gen0_gcs={GC.CollectionCount(0) - g0}"));
        await stop.CancelAsync().ConfigureAwait(false);
        try
        {
            await run.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }

        return 0;
    }

    private sealed class SinkDevice : VhostUserDevice
    {
        public long Packets;
        public long WorkerAllocated;

        public override VirtioDeviceType DeviceType => VirtioDeviceType.Net;

        public override ulong DeviceFeatures =>
            VirtioFeatureBits.Version1 | VirtioFeatureBits.NetMrgRxbuf | VirtioFeatureBits.IndirectDesc
            | VirtioFeatureBits.EventIdx | VirtioFeatureBits.RingPacked | VirtioFeatureBits.InOrder;

        public override int QueueCount => 2;

        public override void OnQueueKicked(Virtqueue queue)
        {
            if (queue.Index % 2 == 0)
            {
                return;
            }

            long n = 0;
            while (queue.TryPop(out DescriptorChain? chain))
            {
                queue.Push(chain, 0);
                n++;
            }

            if (n != 0)
            {
                Volatile.Write(ref Packets, Packets + n); // single writer: the worker thread
            }

            Volatile.Write(ref WorkerAllocated, GC.GetAllocatedBytesForCurrentThread());
        }
    }
}
