using BenchmarkDotNet.Running;
using VhostCompat.Benchmarks;

// Usage:
//   dotnet run -c Release --project tests/VhostCompat.Benchmarks -- --filter '*' --job short   (BenchmarkDotNet)
//   dotnet run -c Release --project tests/VhostCompat.Benchmarks -- alloc-check [chains]        (allocated bytes per chain, no BDN)
//   dotnet run -c Release --project tests/VhostCompat.Benchmarks -- sink-server --socket-path P [--seconds N] [--warmup N] [--busy-poll]
//       (a sink backend for a real frontend; prints managed bytes allocated per packet)
//   dotnet run -c Release --project tests/VhostCompat.Benchmarks -- handshake [iterations] [queues] [ack|pipelined]
//       (the HandshakeBenchmarks operation in a plain loop, for profilers: prints min/median/p90 and bytes per handshake)
//   dotnet run -c Release --project tests/VhostCompat.Benchmarks -- walker-ab [rounds]          (SDK walker vs the LeanSplitQueue experiment, interleaved)
//   dotnet run -c Release --project tests/VhostCompat.Benchmarks -- soak --socket-path P --pid N --device net|block|rng [--cycles N] ...
//       (connect → misbehave → close cycles against a running sample, measured through /proc/N; scripts/soak.sh runs all three)
if (args.Length > 0 && args[0] == "sink-server")
{
    return await SinkServer.RunAsync(args);
}

if (args.Length > 0 && args[0] == "soak")
{
    return await VhostCompat.Benchmarks.Soak.SoakCommand.RunAsync(args);
}

if (args.Length > 0 && args[0] == "shield") return await VhostCompat.Benchmarks.Shield.ShieldCommand.RunAsync(args); // hostile message-level cases vs a backend, direct or proxied (scripts/shield.sh)

if (args.Length > 0 && args[0] == "walker-ab")
{
    return WalkerAb.Run(args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 30);
}

if (args.Length > 0 && args[0] == "handshake")
{
    return HandshakeLoop.Run(args);
}

if (args.Length > 0 && args[0] == "alloc-check")
{
    long chains = args.Length > 1 ? long.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 10_000_000;
    return AllocCheck.Run(chains);
}

BenchmarkSwitcher.FromAssembly(typeof(TranslationBenchmarks).Assembly).Run(args);
return 0;
