using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using VhostCompat.InteropTests.Harness;
using Xunit.Abstractions;

namespace VhostCompat.InteropTests;

/// <summary>
/// samples/Input (a vhost-user-input keyboard) under a real guest. QEMU 10.0 is the frontend: QEMU 7.2's
/// vhost-user-input refuses to start without KVM, and these machines run TCG (the second test pins that).
/// </summary>
[Collection(QemuCollection.Name)]
[Trait("Category", "Interop")]
public sealed class InputInteropTests(ITestOutputHelper output)
{
    private const string Text = "Hello vhostcompat 10\n";

    private static readonly TimeSpan BootTimeout = TimeSpan.FromSeconds(
        int.TryParse(Environment.GetEnvironmentVariable("VHOSTCOMPAT_INTEROP_BOOT_TIMEOUT"), CultureInfo.InvariantCulture, out var s) ? s : 180);

    private static readonly Regex LedOn = new(@"LED num lock on \(LEDs 0x1\)", RegexOptions.CultureInvariant);

    /// <summary>
    /// The guest sets Num Lock through the keyboard's evdev node; the kernel sends the LED state on the statusq and
    /// the backend logs it, then types the text on the eventq (buffers held until each key is due), and the guest reads
    /// exactly that text back as key presses from /dev/input/eventN.
    /// </summary>
    [SkippableFact]
    public async Task Qemu10_guest_reads_the_typed_text_and_the_backend_sees_the_LED_it_sets()
    {
        var tools = InteropPrerequisites.RequireQemuGuest(QemuPeer.Qemu100);
        var run = InteropRun.Create(nameof(Qemu10_guest_reads_the_typed_text_and_the_backend_sees_the_LED_it_sets));
        output.WriteLine($"run directory: {run.Directory}");
        await RequireDeviceAsync(run, tools);
        var caps = await InputSampleBackend.GetCapabilitiesAsync(run);
        caps.Type.Should().Be("input");

        var socket = run.PathFor("input.sock");
        var problems = new List<string>();
        string stateDir = Directory.CreateDirectory(run.PathFor("state")).FullName;
        await using var backend = await InputSampleBackend.StartAsync(run, socket, ["--start", "led", "--state-dir", stateDir, "--text", Text.Replace("\n", "\\n", StringComparison.Ordinal)]);
        IReadOnlyList<GuestInputEvent> events;
        Match? status, led;
        await using (var guest = await InputQemuGuest.StartAsync(run, tools, socket))
        {
            output.WriteLine($"qemu pid {guest.Process.Pid}: {guest.Process.CommandLine}");
            status = await guest.WaitForConsoleAsync(InputQemuGuest.StatusOrNoDevice, BootTimeout);
            status.Should().NotBeNull($"the guest prints its virtio-input status line ({guest.Observed()}); backend requests: {backend.RequestSequence()}{run.Diagnostics()}");
            status = await guest.WaitForConsoleAsync(InputQemuGuest.StatusLine, TimeSpan.FromSeconds(5)); // the whole line, with the device id
            led = await guest.WaitForConsoleAsync(InputQemuGuest.LedLine, TimeSpan.FromSeconds(30));
            if (await CompatSampleLog.WaitForCountAsync(backend.LogPath, LedOn, 1, TimeSpan.FromSeconds(60), backend.Process) is null)
            {
                problems.Add($"the backend never logged the Num Lock LED the guest set ({guest.Observed()})");
            }

            if (await guest.WaitForConsoleAsync(InputQemuGuest.DoneLine, TimeSpan.FromSeconds(120)) is null)
            {
                problems.Add($"the guest never printed its done line ({guest.Observed()})");
            }

            if (!await guest.WaitForExitAsync(TimeSpan.FromSeconds(60)))
            {
                problems.Add($"QEMU did not exit after the guest powered off ({guest.Observed()})");
            }
            else if (guest.Process.ExitCode != 0)
            {
                problems.Add($"QEMU exited with {guest.Process.ExitCode}: {string.Join(" | ", guest.StderrErrorLines())}");
            }

            events = guest.Events();
            foreach (var line in guest.GuestLines().Where(l => !l.Contains("event hex=", StringComparison.Ordinal)))
            {
                output.WriteLine("guest: " + line);
            }
        }

        if (await CompatSampleLog.WaitForAllDisconnectedAsync(backend.LogPath, TimeSpan.FromSeconds(30), backend.Process) is { } notClosed)
        {
            problems.Add("after QEMU quit, " + notClosed);
        }

        await backend.StopAsync();
        output.WriteLine($"backend requests: {backend.RequestSequence()}");
        foreach (var l in LogFile.ReadLines(backend.LogPath).Where(l => l.Contains("acked", StringComparison.Ordinal) || l.Contains("Samples.Input", StringComparison.Ordinal) && !l.Contains("_CONFIG", StringComparison.Ordinal)))
        {
            output.WriteLine("backend: " + l.Trim());
        }

        if (backend.Process.ExitCode != 0)
        {
            problems.Add($"the backend exited with {backend.Process.ExitCode?.ToString(CultureInfo.InvariantCulture) ?? "(running)"} after SIGTERM, expected 0");
        }

        if (status is not { Success: true } || status.Groups["status"].Value != "0f" || status.Groups["device"].Value != "0x0012")
        {
            problems.Add($"guest status line '{status?.Value}', expected status=0x0f device=0x0012");
        }

        if (led?.Groups["result"].Value != "ok")
        {
            problems.Add($"the guest could not write the LED event ({led?.Value ?? "no line"})");
        }

        string typed = Decode(events);
        output.WriteLine($"guest read {events.Count} events, typed text '{typed.Replace("\n", "\\n", StringComparison.Ordinal)}'");
        if (typed != Text)
        {
            problems.Add($"the guest read '{typed.Replace("\n", "\\n", StringComparison.Ordinal)}', expected '{Text.Replace("\n", "\\n", StringComparison.Ordinal)}'");
        }

        if (events.Any(e => e is { Type: 0, Code: 3 }))
        {
            problems.Add("the guest's evdev reader saw SYN_DROPPED: events were lost");
        }

        // QEMU's vhost-user-input never forwards DRIVER_OK: the acked-state record is written once both rings run.
        var record = new VhostCompat.Compat.AckedStateStore(stateDir).Load(VhostCompat.Compat.AckedStateStore.DefaultKey(socket));
        if (record is null)
        {
            problems.Add($"no acked-state record in {stateDir} although the guest used the device");
        }
        else
        {
            output.WriteLine($"acked-state record {record.Key}: features 0x{record.AckedFeatures:x}, rings {string.Join(",", record.QueueSizes.Select(kv => $"{kv.Key}:{kv.Value}"))}");
            if (record.DeviceType != VhostCompat.Virtio.VirtioDeviceType.Input || record.QueueSizes.Count != 2)
            {
                problems.Add($"the record is for {record.DeviceType} with {record.QueueSizes.Count} rings, expected input with 2");
            }
        }

        if (!LogFile.ReadLines(backend.LogPath).Any(l => l.Contains("no DRIVER_OK from the frontend", StringComparison.Ordinal)))
        {
            problems.Add("the backend did not log why it saved the record (rings started, no DRIVER_OK)");
        }

        problems.Should().BeEmpty();
    }

    /// <summary>QEMU 7.2's vhost-user-input needs KVM: under TCG it refuses to realize the device and exits (a quirk docs/protocol.md lists).</summary>
    [SkippableFact]
    public async Task Qemu72_vhost_user_input_refuses_to_start_under_TCG()
    {
        var tools = InteropPrerequisites.RequireQemuGuest();
        Skip.If(Environment.GetEnvironmentVariable("VHOSTCOMPAT_QEMU_ACCEL") is { Length: > 0 } a && a != "tcg", "this pins QEMU 7.2's behaviour under TCG");
        var run = InteropRun.Create(nameof(Qemu72_vhost_user_input_refuses_to_start_under_TCG));
        await RequireDeviceAsync(run, tools);
        var socket = run.PathFor("input.sock");
        await using var backend = await InputSampleBackend.StartAsync(run, socket, []);
        await using var guest = await InputQemuGuest.StartAsync(run, tools, socket);
        (await guest.WaitForExitAsync(TimeSpan.FromSeconds(60))).Should().BeTrue($"QEMU 7.2 exits at once ({guest.Observed()})");
        guest.Process.ExitCode.Should().NotBe(0);
        string stderr = string.Join("\n", guest.StderrErrorLines());
        output.WriteLine("QEMU 7.2: " + stderr);
        stderr.Should().Contain("requires kvm");
    }

    private static async Task RequireDeviceAsync(InteropRun run, InteropTools tools)
    {
        if (await InputQemuGuest.HasDeviceAsync(run, tools))
        {
            return;
        }

        const string what = "this QEMU has no vhost-user-input-pci device (qemu-system-x86_64 -device vhost-user-input-pci,help)";
        if (InteropPrerequisites.Required)
        {
            Assert.Fail($"{InteropPrerequisites.RequireVariable} is set, but {what}");
        }

        Skip.If(true, what);
    }

    /// <summary>The text the key presses spell (US layout, left shift), from the events in the order read.</summary>
    private static string Decode(IEnumerable<GuestInputEvent> events)
    {
        const string row1 = "1234567890", row2 = "qwertyuiop", row3 = "asdfghjkl", row4 = "zxcvbnm";
        var keys = new Dictionary<ushort, char> { [57] = ' ', [28] = '\n' };
        void Row(string chars, ushort first)
        {
            for (int i = 0; i < chars.Length; i++)
            {
                keys[(ushort)(first + i)] = chars[i];
            }
        }

        Row(row1, 2);
        Row(row2, 16);
        Row(row3, 30);
        Row(row4, 44);
        var text = new StringBuilder();
        bool shift = false;
        foreach (var e in events.Where(e => e.Type == 1))
        {
            if (e.Code == 42)
            {
                shift = e.Value != 0;
            }
            else if (e.Value == 1 && keys.TryGetValue(e.Code, out char c))
            {
                text.Append(shift ? char.ToUpperInvariant(c) : c);
            }
            else if (e.Value == 1)
            {
                text.Append('?');
            }
        }

        return text.ToString();
    }
}
