using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using System.Text.RegularExpressions;
using System.Xml.Linq;
using VhostCompat.Compat;
using VhostCompat.InteropTests.Harness;
using Xunit.Abstractions;

namespace VhostCompat.InteropTests;

/// <summary>
/// Real libvirt 9.0 (Debian 12) driving QEMU 7.2 with an <c>&lt;interface type='vhostuser'&gt;</c> on samples/Net, with
/// <c>vhost-compat libvirt hook</c> installed in its qemu.d hooks directory: the hook gates domain start on the pin and
/// an incoming migration on the profile; <c>vhost-compat libvirt annotate</c>'s metadata survives libvirt.
/// Two private libvirtd instances (<see cref="LibvirtNode"/>: own mount namespace, run/state/config dirs, host_uuid)
/// act as two hosts.
/// </summary>
[Collection(QemuCollection.Name)]
[Trait("Category", "Interop")]
public sealed class LibvirtInteropTests(ITestOutputHelper output)
{
    private const string V2 = "org.vhostcompat.net.v2";
    private static readonly TimeSpan Boot = TimeSpan.FromSeconds(180);
    private static readonly XNamespace Ns = "https://vhostcompat.org/xmlns/libvirt/1";

    private static InteropTools RequireLibvirt()
    {
        var tools = InteropPrerequisites.RequireQemuGuest();
        if (LibvirtNode.Missing() is { } missing)
        {
            if (InteropPrerequisites.Required)
            {
                Assert.Fail($"{InteropPrerequisites.RequireVariable} is set, but {missing}");
            }

            Skip.If(true, missing + $"; set {InteropPrerequisites.RequireVariable}=1 to make this a failure");
        }

        return tools;
    }

    private async Task<string> AnnotateAsync(InteropRun run, string xml, string caps, string name)
    {
        var input = run.PathFor(name + ".xml");
        await File.WriteAllTextAsync(input, xml);
        var r = await CompatCli.RunAsync(run, "annotate-" + name, ["libvirt", "annotate", "--caps", caps, "--profile", V2, input], TimeSpan.FromSeconds(60));
        Assert.True(r.ExitCode == 0, r.ToString());
        var path = run.PathFor(name + ".annotated.xml");
        await File.WriteAllTextAsync(path, r.Stdout);
        return path;
    }

    private static async Task<bool> WaitUntilAsync(Func<bool> condition, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            if (clock.Elapsed > timeout)
            {
                return false;
            }

            await Task.Delay(200);
        }

        return true;
    }

    private static async Task<string> CapsAsync(InteropRun run, string name)
    {
        var caps = await SampleProcess.GetCapabilitiesAsync(run, name, SampleNetBackend.DllPath);
        var path = run.PathFor(name + ".json");
        await File.WriteAllTextAsync(path, caps.Json);
        return path;
    }

    [SkippableFact]
    public async Task Hook_refuses_to_start_a_domain_whose_backend_is_not_pinned_and_the_annotation_survives_libvirt()
    {
        var tools = RequireLibvirt();
        var run = InteropRun.Create(nameof(Hook_refuses_to_start_a_domain_whose_backend_is_not_pinned_and_the_annotation_survives_libvirt));
        output.WriteLine($"run directory: {run.Directory}");
        var initrd = await Initramfs.GetAsync(tools);
        var caps = await CapsAsync(run, "caps-build3");
        var socket = run.PathFor("net0.sock");
        var console = run.PathFor("console.log");
        const string name = "vc-start";

        await using var node = await LibvirtNode.StartAsync(run, "host-a", 1, ["--timeout", "3", "--deadline", "30"]);
        var unpinned = await SampleNetBackend.StartAsync(run, socket, ["--responder", LibvirtDomain.ResponderIp], "backend-unpinned");
        var annotated = await AnnotateAsync(run, LibvirtDomain.Xml(name, tools, initrd, socket, console), caps, name);
        var define = await node.VirshAsync("define", annotated);
        Assert.True(define.Ok, define.ToString());
        node.Track(name);

        // The backend runs unpinned (it offers its build's latest, v3): the hook refuses at 'prepare begin'.
        var refused = await node.VirshAsync("start", name);
        output.WriteLine($"virsh start (backend not pinned): {refused}");
        refused.Ok.Should().BeFalse();
        refused.Stderr.Should().Contain("Hook script execution failed").And.Contain($"is not pinned to the domain's profile {V2}").And.Contain("offers ");
        node.HookRuns().Should().Contain($"{name} prepare begin -");
        (await node.DomStateAsync(name)).Should().StartWith("shut off");
        await unpinned.StopAsync();
        await unpinned.DisposeAsync();

        // Pinned to the domain's profile: the hook lets prepare and start through, the guest comes up and pings.
        await using var pinned = await SampleNetBackend.StartAsync(run, socket, ["--responder", LibvirtDomain.ResponderIp, "--compat-profile", V2], "backend-pinned");
        var clock = Stopwatch.StartNew();
        var started = await node.VirshAsync("start", name);
        output.WriteLine($"virsh start (pinned): {started}");
        started.Ok.Should().BeTrue(started.ToString());
        node.HookRuns().Should().ContainInOrder($"{name} prepare begin -", $"{name} prepare begin -", $"{name} start begin -");
        (await WaitUntilAsync(() => LibvirtDomain.PingReplies(console) >= 2, Boot)).Should().BeTrue($"the guest should ping its backend's responder{run.Diagnostics()}");
        output.WriteLine($"guest pinging {clock.Elapsed.TotalSeconds:F1} s after virsh start; state {await node.DomStateAsync(name)}");

        // The metadata comes back from libvirt as written, and annotating libvirt's XML again changes nothing of it.
        var dumped = await node.VirshAsync("dumpxml", name);
        dumped.Ok.Should().BeTrue(dumped.ToString());
        var ours = XDocument.Parse(dumped.Stdout).Root!.Element("metadata")!.Element(Ns + "devices")!;
        var device = ours.Element(Ns + "device")!;
        device.Attribute("mac")!.Value.Should().Be(LibvirtDomain.Mac);
        device.Attribute("key")!.Value.Should().Be(AckedStateStore.DefaultKey(socket));
        device.Element(Ns + "profile")!.Attribute("id")!.Value.Should().Be(V2);
        using (var capsDoc = JsonDocument.Parse(await File.ReadAllTextAsync(caps)))
        {
            var canonical = capsDoc.RootElement.GetProperty("vhostcompat").GetProperty("profiles").GetProperty("supported").EnumerateArray()
                .Single(p => p.GetProperty("id").GetString() == V2).GetProperty("canonical").GetString();
            device.Element(Ns + "profile")!.Value.Trim().Should().Be(canonical);
            capsDoc.RootElement.GetProperty("features").EnumerateArray().Select(e => e.GetString()).Should().Contain("vhostcompat-profile:" + V2);
        }

        var again = await AnnotateAsync(run, dumped.Stdout, caps, name + "-again");
        XNode.DeepEquals(XDocument.Load(again).Root!.Element("metadata")!.Element(Ns + "devices"), ours).Should().BeTrue();
        (await node.VirshAsync("destroy", name)).Ok.Should().BeTrue();
    }

    [SkippableFact]
    public async Task Live_migration_is_refused_by_the_destination_hook_before_the_source_pauses_and_completes_once_the_destination_carries_the_profile()
    {
        var tools = RequireLibvirt();
        var run = InteropRun.Create(nameof(Live_migration_is_refused_by_the_destination_hook_before_the_source_pauses_and_completes_once_the_destination_carries_the_profile));
        output.WriteLine($"run directory: {run.Directory}");
        var initrd = await Initramfs.GetAsync(tools);
        var caps = await CapsAsync(run, "caps-build3");
        string srcSocket = run.PathFor("src.sock"), dstSocket = run.PathFor("dst.sock");
        string srcConsole = run.PathFor("console-src.log"), dstConsole = run.PathFor("console-dst.log");
        const string name = "vc-migrate";
        string[] hook = ["--timeout", "3", "--deadline", "30"];

        await using var src = await LibvirtNode.StartAsync(run, "src", 1, hook);
        await using var dst = await LibvirtNode.StartAsync(run, "dst", 2, hook);
        await using var srcBackend = await SampleNetBackend.StartAsync(run, srcSocket, ["--responder", LibvirtDomain.ResponderIp, "--compat-profile", V2], "backend-src");
        var oldBackend = await SampleNetBackend.StartAsync(run, dstSocket, ["--responder", LibvirtDomain.ResponderIp, "--build", "1"], "backend-dst-build1");

        var annotated = await AnnotateAsync(run, LibvirtDomain.Xml(name, tools, initrd, srcSocket, srcConsole), caps, name);
        var created = await src.VirshAsync("create", annotated);
        created.Ok.Should().BeTrue(created.ToString());
        src.Track(name);
        dst.Track(name);
        (await WaitUntilAsync(() => LibvirtDomain.PingReplies(srcConsole) >= 2, Boot)).Should().BeTrue($"the guest should ping on the source{run.Diagnostics()}");

        // The destination's XML: libvirt's migratable XML with the destination's socket and console.
        var migratable = await src.VirshAsync("dumpxml", "--migratable", name);
        var dstXml = run.PathFor("dst.xml");
        await File.WriteAllTextAsync(dstXml, migratable.Stdout.Replace(srcSocket, dstSocket, StringComparison.Ordinal).Replace(srcConsole, dstConsole, StringComparison.Ordinal));

        await using var events = ExternalProcess.Start(new ExternalProcessOptions("virsh-events-src", "/usr/bin/virsh", ["-c", src.Uri, "event", "--domain", name, "--event", "lifecycle", "--loop", "--timestamp"], run.Directory, TimeSpan.FromMinutes(10)));
        string stateBefore = await src.DomStateAsync(name);
        int tickBefore = LibvirtDomain.LastTick(srcConsole);
        var clock = Stopwatch.StartNew();
        var refused = await src.VirshAsync("migrate", "--live", name, dst.Uri, "--migrateuri", "tcp://127.0.0.1:" + FreePort(), "--xml", dstXml);
        var refusedAfter = clock.Elapsed;
        string stateAfter = await src.DomStateAsync(name);
        output.WriteLine($"virsh migrate to a build-1 destination ({refusedAfter.TotalSeconds:F2} s): {refused}");
        output.WriteLine($"source state before: {stateBefore}; after: {stateAfter}; tick before {tickBefore}");
        refused.Ok.Should().BeFalse();
        refused.Stderr.Should().Contain("Hook script execution failed").And.Contain("profile-unsupported").And.Contain($"profile {V2} needs features the destination does not offer");
        stateBefore.Should().Be("running (booted)");
        stateAfter.Should().Be(stateBefore);
        dst.HookRuns().Should().Equal($"{name} migrate begin -");
        (await dst.VirshAsync("list", "--all", "--name")).Stdout.Trim().Should().BeEmpty("nothing is left on the destination");
        int tickAfter = LibvirtDomain.LastTick(srcConsole);
        (await WaitUntilAsync(() => LibvirtDomain.LastTick(srcConsole) >= tickAfter + 2, TimeSpan.FromSeconds(60))).Should().BeTrue("the guest keeps running on the source");
        output.WriteLine($"source guest ticks: {tickBefore} before, {tickAfter} right after, {LibvirtDomain.LastTick(srcConsole)} later");
        await oldBackend.StopAsync();
        await oldBackend.DisposeAsync();

        // A destination backend that carries the profile (build 3 pinned to v2): the same migration completes.
        await using var newBackend = await SampleNetBackend.StartAsync(run, dstSocket, ["--responder", LibvirtDomain.ResponderIp, "--compat-profile", V2], "backend-dst-build3");
        int repliesBefore = LibvirtDomain.PingReplies(dstConsole);
        clock.Restart();
        var migrated = await src.VirshAsync("migrate", "--live", name, dst.Uri, "--migrateuri", "tcp://127.0.0.1:" + FreePort(), "--xml", dstXml);
        output.WriteLine($"virsh migrate to a carrying destination ({clock.Elapsed.TotalSeconds:F2} s): {migrated}");
        migrated.Ok.Should().BeTrue(migrated.ToString() + run.Diagnostics());
        (await dst.DomStateAsync(name)).Should().StartWith("running");
        (await src.VirshAsync("list", "--all", "--name")).Stdout.Trim().Should().BeEmpty();
        (await WaitUntilAsync(() => LibvirtDomain.PingReplies(dstConsole) >= repliesBefore + 2, TimeSpan.FromSeconds(60))).Should().BeTrue($"the guest keeps pinging on the destination{run.Diagnostics()}");
        dst.HookRuns().Should().ContainInOrder($"{name} migrate begin -", $"{name} migrate begin -", $"{name} prepare begin -", $"{name} start begin -");

        // The event watcher works (it saw the successful migration) and saw no pause before it.
        await events.StopAsync(TimeSpan.FromSeconds(5));
        var lifecycle = events.ReadStdout();
        output.WriteLine("source lifecycle events:\n" + lifecycle);
        lifecycle.Should().Contain("Stopped Migrated");
        Regex.Count(lifecycle, "Suspended").Should().BeLessThanOrEqualTo(1, "only the successful migration's switch-over pauses the source");
        (await dst.VirshAsync("destroy", name)).Ok.Should().BeTrue();
    }

    private static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }
}
