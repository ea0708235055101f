using System.Globalization;
using VhostCompat.Virtio;

namespace VhostCompat.Compat;

/// <summary>
/// What the frontend puts into the migration stream, as measured with real QEMU (docs/compatibility.md, the
/// cross-version matrix): when the frontend acked DEVICE_STATE on a vhost-user-net device, QEMU 10.0 carries the
/// backend's device state (SET_DEVICE_STATE_FD / CHECK_DEVICE_STATE) inside virtio-net's migration state, and QEMU
/// 7.2 cannot load that stream ("Failed to load virtio-net:virtio"): the migration fails after the transfer, with the
/// source still running. QEMU 7.2 never acks DEVICE_STATE, so a VM created there keeps a stream 7.2 can load only if
/// a profile with <c>device_state=off</c> stops newer hypervisors from negotiating it.
/// </summary>
internal static class FrontendStreamRule
{
    /// <summary>The oldest QEMU measured to load a vhost-user-net stream that carries backend device state.</summary>
    private static readonly (int Major, int Minor) LoadsDeviceState = (10, 0);

    /// <summary>The newest QEMU measured not to load it.</summary>
    private static readonly (int Major, int Minor) RefusesDeviceState = (7, 2);

    public static void Check(AckedStateRecord record, FrontendInfo? host, List<PreflightFinding> findings)
    {
        // Without the destination's frontend side the frontend rules are not applied (as for the machine type).
        if (host is null || record.DeviceType != VirtioDeviceType.Net || (record.AckedProtocolFeatures & (ulong)VhostUserProtocolFeatures.DeviceState) == 0)
        {
            return;
        }

        string source = record.Frontend is { } vm ? $"the VM's {vm.Product} {vm.Version}" : "the VM's frontend";
        string stream = $"{source} acked DEVICE_STATE, so the vhost-user-net migration stream carries the backend's device state";
        if (!string.Equals(host.Product, "qemu", StringComparison.OrdinalIgnoreCase) || Version(host.Version) is not { } v)
        {
            findings.Add(new PreflightFinding(PreflightSeverity.Warning, "device-state-not-checked",
                $"{stream}; whether the destination's {host} loads it was not measured", []));
            return;
        }

        if (v.CompareTo(LoadsDeviceState) >= 0)
        {
            return;
        }

        if (v.CompareTo(RefusesDeviceState) <= 0)
        {
            findings.Add(new PreflightFinding(PreflightSeverity.Error, "device-state-stream",
                $"{stream}; the destination's {host.Product} {host.Version} cannot load it (QEMU 7.2: \"Failed to load virtio-net:virtio\") and would fail after the transfer. " +
                "Migrate to QEMU 10.0 or later, or pin VMs that must stay loadable by older hypervisors to a profile with device_state=off when they are created", []));
            return;
        }

        findings.Add(new PreflightFinding(PreflightSeverity.Warning, "device-state-not-checked",
            $"{stream}; whether {host.Product} {host.Version} (between 7.2, which cannot load it, and 10.0, which can) loads it was not measured", []));
    }

    /// <summary>"10.0.2" → (10, 0); null when it does not start with major.minor.</summary>
    internal static (int Major, int Minor)? Version(string version)
    {
        var parts = version.Split('.');
        return parts.Length >= 2
               && int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int major)
               && int.TryParse(parts[1].Split('~', '+', '-')[0], NumberStyles.None, CultureInfo.InvariantCulture, out int minor)
            ? (major, minor)
            : null;
    }
}
