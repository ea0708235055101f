using System.CommandLine;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Microsoft.Win32.SafeHandles;
using VhostCompat.Hosting;
using VhostCompat.Samples.Block;

// A vhost-user-blk backend serving a file. The runner gives it QEMU's backend-program conventions (--socket-path,
// --client, --fd, --print-capabilities, SIGTERM) and --compat-profile, --state-dir, --log-level; see --help.
// SIGUSR1 holds reads and writes before their I/O (an emulated storage stall: they stay in flight, and each newly
// held one is logged per queue); SIGUSR2 releases them. On a clean stop it prints requests=N resubmitted=N, then io inline=N threaded=N flushes=N.
BlockDevice? device = null;
Thread? progress = null;
return await VhostUserBackendProgram.RunAsync(args, program =>
{
    program.Description = "vhost-user-blk backend serving a disk image file";
    var image = program.AddOption(new Option<string>("--image") { Description = "The disk image (created with --size if missing)", HelpName = "FILE" });
    var size = program.AddNumber("--size", "Size in bytes of a new image, a multiple of 512", 0L, 0L, long.MaxValue);
    size.Validators.Add(r => { if (r.GetValueOrDefault<long>() % BlockDevice.SectorSize != 0) { r.AddError("--size must be a multiple of 512"); } });
    var readOnly = program.AddOption(new Option<bool>("--read-only") { Description = "Refuse writes (VIRTIO_BLK_F_RO)" });
    var queues = program.AddNumber("--queues", "Virtqueues", 1, 1, 64);
    var queueDepth = program.AddNumber("--queue-depth", "Reads and writes in flight per queue, completed out of order", 32, 1, 1024);
    var ioThreads = program.AddNumber("--io-threads", "Threads for reads and writes not in the host page cache (0: the queue's worker does them, blocking)", 2, 0, 64);
    var latency = program.AddNumber("--io-latency-ms", "Milliseconds added to every read and write (slow storage)", 0, 0, 10000);
    var serial = program.AddOption(new Option<string>("--serial") { Description = "The GET_ID string", HelpName = "ID", DefaultValueFactory = _ => "vhostcompat" });
    var progressMs = program.AddNumber("--progress", "Log the first completed request (time since process start) and the count every N ms (0: off)", 0, 0, int.MaxValue);
    program.Validate(c => c.PrintCapabilities ? null
        : c.GetValue(image) is not { } path ? "--image is required"
        : File.Exists(path) || c.GetValue(size) > 0 ? null
        : $"{path} does not exist; give --size to create it");
    program.UseLogging(level => LoggerFactory.Create(b => b.SetMinimumLevel(level).AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "HH:mm:ss.fff "; })));
    program.ConfigureBackend((c, _, o) => o.Workers = Math.Min(c.GetValue(queues), Environment.ProcessorCount));
    program.UseDevice((c, _) =>
    {
        if (c.PrintCapabilities)
        {
            return new BlockDevice(c.RegisterForDispose(new SafeFileHandle()), c.GetValue(size), c.GetValue(readOnly), c.GetValue(queues), c.GetValue(serial)!);
        }

        string path = c.GetValue(image)!;
        if (!File.Exists(path))
        {
            using var create = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite);
            RandomAccess.SetLength(create, c.GetValue(size));
        }

        var file = c.RegisterForDispose(File.OpenHandle(path, FileMode.Open, c.GetValue(readOnly) ? FileAccess.Read : FileAccess.ReadWrite, FileShare.Read));
        device = new BlockDevice(file, RandomAccess.GetLength(file), c.GetValue(readOnly), c.GetValue(queues), c.GetValue(serial)!, c.GetValue(queueDepth), TimeSpan.FromMilliseconds(c.GetValue(latency)),
            c.GetValue(ioThreads));
        c.RegisterForDispose(device);
        var log = c.LoggerFactory.CreateLogger("VhostCompat.Samples.Block");
        device.Held += (queue, reads, writes) => StallLog.Held(log, queue, reads, writes);
        progress = c.GetValue(progressMs) is > 0 and int ms ? RequestProgress.Start(device, log, TimeSpan.FromMilliseconds(ms), c.Stopping) : null;
        return device;
    });
    program.OnSignal((PosixSignal)StallLog.SigUsr1, c => { StallLog.Holding(c.LoggerFactory.CreateLogger("VhostCompat.Samples.Block")); device?.HoldRequests(); });
    program.OnSignal((PosixSignal)StallLog.SigUsr2, c => { StallLog.Releasing(c.LoggerFactory.CreateLogger("VhostCompat.Samples.Block")); device?.ReleaseRequests(); });
    program.OnStopped(_ =>
    {
        progress?.Join();
        Console.WriteLine($"requests={device!.Requests} resubmitted={device.Resubmitted}");
        Console.WriteLine($"io inline={device.InlineRequests} threaded={device.ThreadedRequests} flushes={device.Flushes}"); // own line: tools parse the first
    });
});
