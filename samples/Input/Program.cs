using System.CommandLine;
using Microsoft.Extensions.Logging;
using VhostCompat.Hosting;
using VhostCompat.Samples.Input;

// A vhost-user-input keyboard. The runner gives it QEMU's backend-program conventions (--socket-path, --client, --fd,
// --print-capabilities, SIGTERM) and --compat-profile, --state-dir, --log-level; see --help.
return await VhostUserBackendProgram.RunAsync(args, program =>
{
    program.Description = "vhost-user-input backend: a keyboard that types a text and reports the LEDs the guest sets";
    var text = program.AddOption(new Option<string>("--text") { Description = "What the keyboard types (US layout; \\n is Enter)", DefaultValueFactory = _ => "hello from vhostcompat\\n" });
    var start = program.AddOption(new Option<string>("--start") { Description = "When to type: when the event queue is enabled, or when the guest first changes an LED", DefaultValueFactory = _ => "enable" });
    start.AcceptOnlyFromAmong("enable", "led");
    var interval = program.AddNumber("--key-interval-ms", "Milliseconds between two keys (0: the whole text at once)", 30, 0, 1000);
    program.Validate(c => KeyMap.FirstUntypable(InputDevice.Unescape(c.GetValue(text)!)) is { } bad ? $"--text: the US layout has no key for '{bad}'" : null);
    program.UseLogging(level => LoggerFactory.Create(b => b.SetMinimumLevel(level).AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "HH:mm:ss.fff "; })));
    program.UseDevice((c, _) => new InputDevice(InputDevice.Unescape(c.GetValue(text)!), c.GetValue(start) == "led", c.GetValue(interval), c.LoggerFactory.CreateLogger("VhostCompat.Samples.Input")));
});
