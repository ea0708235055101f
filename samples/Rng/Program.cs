using Microsoft.Extensions.Logging;
using VhostCompat.Hosting;
using VhostCompat.Samples.Rng;

// A vhost-user-rng backend. The runner gives it QEMU's backend-program conventions (--socket-path, --client, --fd,
// --print-capabilities, SIGTERM) and --compat-profile, --state-dir, --log-level; see --help.
return await VhostUserBackendProgram.RunAsync(args, program =>
{
    program.Description = "vhost-user-rng backend: random bytes for the guest";
    program.UseLogging(level => LoggerFactory.Create(b => b.SetMinimumLevel(level).AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "HH:mm:ss.fff "; })));
    program.UseDevice((_, _) => new RngDevice());
});
