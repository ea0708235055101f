using System.Security;
using System.Text.RegularExpressions;

namespace VhostCompat.InteropTests.Harness;

/// <summary>
/// The interop guest as a libvirt domain: TCG (<c>type='qemu'</c>), memfd shared memory, the Debian kernel with the
/// harness initramfs in loop mode (a tick line per second, a ping to the backend's responder per second), the serial
/// console to a file, and one <c>&lt;interface type='vhostuser'&gt;</c> in client mode. QEMU 7.2 under TCG needs
/// <c>vectors=0</c> on the NIC, set with <c>&lt;qemu:override&gt;</c> on the interface's alias.
/// </summary>
public static class LibvirtDomain
{
    public const string Mac = "52:54:00:4c:56:01";

    public const string GuestIp = "10.0.0.2";

    public const string ResponderIp = "10.0.0.1";

    public static readonly Regex Tick = new(@"VHOSTCOMPAT: tick n=(?<n>\d+)", RegexOptions.CultureInvariant);

    public static readonly Regex PingReply = new(@"64 bytes from 10\.0\.0\.1: seq=(?<seq>\d+)", RegexOptions.CultureInvariant);

    public static string Xml(string name, InteropTools tools, string initrd, string socket, string console)
    {
        ArgumentNullException.ThrowIfNull(tools);
        static string E(string s) => SecurityElement.Escape(s);
        return $"""
            <domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
              <name>{E(name)}</name>
              <memory unit='MiB'>256</memory>
              <memoryBacking>
                <source type='memfd'/>
                <access mode='shared'/>
              </memoryBacking>
              <vcpu>1</vcpu>
              <os>
                <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
                <kernel>{E(tools.Kernel)}</kernel>
                <initrd>{E(initrd)}</initrd>
                <cmdline>console=ttyS0 panic=-1 quiet vhostcompat.mode=loop vhostcompat.pingloop=1 vhostcompat.ip={GuestIp}/24 vhostcompat.peer={ResponderIp}</cmdline>
              </os>
              <on_poweroff>destroy</on_poweroff>
              <on_reboot>destroy</on_reboot>
              <on_crash>destroy</on_crash>
              <devices>
                <emulator>{E(tools.Qemu)}</emulator>
                <interface type='vhostuser'>
                  <mac address='{Mac}'/>
                  <source type='unix' path='{E(socket)}' mode='client'/>
                  <model type='virtio'/>
                  <alias name='ua-net0'/>
                </interface>
                <serial type='file'>
                  <source path='{E(console)}'/>
                  <target port='0'/>
                </serial>
                <memballoon model='none'/>
              </devices>
              <qemu:override>
                <qemu:device alias='ua-net0'>
                  <qemu:frontend>
                    <qemu:property name='vectors' type='unsigned' value='0'/>
                  </qemu:frontend>
                </qemu:device>
              </qemu:override>
            </domain>
            """;
    }

    /// <summary>The highest tick number in a console file (-1: none yet).</summary>
    public static int LastTick(string console) =>
        LogFile.ReadLines(console).Select(l => Tick.Match(l)).Where(m => m.Success).Select(m => int.Parse(m.Groups["n"].Value, System.Globalization.CultureInfo.InvariantCulture)).DefaultIfEmpty(-1).Max();

    /// <summary>Ping replies seen in a console file.</summary>
    public static int PingReplies(string console) => LogFile.ReadLines(console).Count(l => PingReply.IsMatch(l));
}
