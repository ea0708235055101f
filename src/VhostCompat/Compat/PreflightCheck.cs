using System.Text;
using System.Text.Json;
using VhostCompat.Virtio;

namespace VhostCompat.Compat;

/// <summary>How bad a preflight finding is.</summary>
public enum PreflightSeverity
{
    /// <summary>The destination cannot carry the VM: QEMU would refuse the incoming state, or the guest would see a different device.</summary>
    Error,

    /// <summary>Worth knowing, does not make the move fail.</summary>
    Warning,
}

/// <summary>One reason found by <see cref="PreflightCheck"/>.</summary>
/// <param name="Severity">Error or warning.</param>
/// <param name="Code">
/// Stable code: <c>device-type</c>, <c>features-unsupported</c> (acked bits missing),
/// <c>profile-unsupported</c> (profile bits or limits missing), <c>protocol-features</c>,
/// <c>ring-size</c>, <c>queue-count</c>, <c>config-size</c>, <c>config-mismatch</c>,
/// <c>profile-changed</c> (same id, different values), <c>profile-not-in-catalog</c> (warning),
/// <c>profile-not-pinned</c> (warning: the record's profile was the source's default, not a pin; only the acked interface is checked),
/// <c>machine-type</c> (the destination's frontend has no such machine type), <c>frontend-not-checked</c> (warning: one side's frontend is unknown).
/// </param>
/// <param name="Message">A sentence for humans.</param>
/// <param name="Features">The feature names concerned (empty when not about features).</param>
public sealed record PreflightFinding(PreflightSeverity Severity, string Code, string Message, IReadOnlyList<string> Features)
{
    /// <inheritdoc/>
    public override string ToString() => $"{(Severity == PreflightSeverity.Error ? "error" : "warning")} {Code}: {Message}";
}

/// <summary>The verdict of a preflight check.</summary>
public sealed class PreflightResult
{
    internal PreflightResult(IReadOnlyList<PreflightFinding> findings) => Findings = findings;

    /// <summary>True when no finding is an error.</summary>
    public bool Compatible => !Findings.Any(f => f.Severity == PreflightSeverity.Error);

    /// <summary>Every finding, errors first, in the order the rules ran.</summary>
    public IReadOnlyList<PreflightFinding> Findings { get; }

    /// <summary>Process exit code for tools: 0 compatible, 1 incompatible (2, "error", is for unusable input and is the caller's).</summary>
    public int ExitCode => Compatible ? 0 : 1;

    /// <summary>Text for humans: a verdict line, then one line per finding.</summary>
    public string ToText()
    {
        var sb = new StringBuilder();
        sb.Append(Compatible ? "compatible" : "incompatible").Append('\n');
        foreach (var f in Findings)
        {
            sb.Append("  ").Append(f).Append('\n');
        }

        return sb.ToString();
    }

    /// <summary>JSON: <c>{"compatible": bool, "findings": [{"severity", "code", "message", "features"}]}</c>.</summary>
    public string ToJson()
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteBoolean("compatible", Compatible);
            w.WriteStartArray("findings");
            foreach (var f in Findings)
            {
                w.WriteStartObject();
                w.WriteString("severity", f.Severity == PreflightSeverity.Error ? "error" : "warning");
                w.WriteString("code", f.Code);
                w.WriteString("message", f.Message);
                w.WriteStartArray("features");
                foreach (string n in f.Features)
                {
                    w.WriteStringValue(n);
                }

                w.WriteEndArray();
                w.WriteEndObject();
            }

            w.WriteEndArray();
            w.WriteEndObject();
        }

        return Encoding.UTF8.GetString(ms.ToArray());
    }
}

/// <summary>
/// Answers, before anything is paused, whether a destination backend can carry a VM whose device
/// was negotiated on a source backend. The rules model what QEMU checks on the incoming side:
/// the guest-acked features must be a subset of what the destination offers (QEMU's
/// <c>virtio_load</c>: "Features 0x... unsupported. Allowed features: 0x..."; on reconnect
/// <c>vhost_net_init</c>: "vhost lacks feature mask 0x... for backend"), ring sizes must not exceed
/// the destination's maximum (SET_VRING_NUM), the queue count must fit, and guest-visible config
/// fields must be equal.
/// </summary>
public static class PreflightCheck
{
    private static readonly string[] NoFeatures = [];

    /// <summary>
    /// Checks a source VM's interface against a destination.
    /// </summary>
    /// <param name="profile">The profile the source backend was pinned to (null: use the record's, if any).</param>
    /// <param name="record">What the source frontend acked (null when only the profile is known).</param>
    /// <param name="destination">The destination's capability document or probe result.</param>
    /// <exception cref="ArgumentException">Neither a profile nor a record.</exception>
    public static PreflightResult Check(InterfaceProfile? profile, AckedStateRecord? record, BackendCapabilities destination)
    {
        ArgumentNullException.ThrowIfNull(destination);
        bool namedByCaller = profile is not null;
        profile ??= record?.Profile;
        if (profile is null && record is null)
        {
            throw new ArgumentException("a preflight check needs a profile or an acked-state record");
        }

        // A profile the source backend only offered by default (no pin) is not a promise to the guest: the VM's
        // interface is what it acked, which is all QEMU holds a destination to. It is reported, not enforced.
        var findings = new List<PreflightFinding>();
        InterfaceProfile? offeredOnly = null;
        if (!namedByCaller && record is { ProfilePinned: false })
        {
            offeredOnly = profile;
            profile = null;
        }

        var type = record?.DeviceType ?? profile!.DeviceType;
        var dst = destination;
        string dstType = VirtioFeatures.TypeLabel(dst.DeviceType);
        if (type != dst.DeviceType || (profile is not null && profile.DeviceType != type))
        {
            findings.Add(Error("device-type", $"the source device is {VirtioFeatures.TypeLabel(type)}, the destination is {dstType}"));
            return new PreflightResult(findings);
        }

        CheckFrontend(record?.Frontend, dst.Frontend, findings);
        if (record is not null)
        {
            FrontendStreamRule.Check(record, dst.Frontend, findings);
        }
        if (record is not null)
        {
            // LOG_ALL is switched on only while the source migrates; it is not part of the guest's interface.
            ulong acked = record.AckedFeatures & ~VirtioFeatureBits.LogAll;
            ulong missing = acked & ~dst.VirtioFeatures;
            if (missing != 0)
            {
                var names = VirtioFeatures.Names(type, missing);
                findings.Add(new PreflightFinding(PreflightSeverity.Error, "features-unsupported",
                    $"Features {FeatureText.Hex(acked)} unsupported. Allowed features: {FeatureText.Hex(dst.VirtioFeatures)} (the guest acked {string.Join(", ", names)}, which the destination does not offer)",
                    names));
            }

            ulong missingProtocol = record.AckedProtocolFeatures & ~dst.ProtocolFeatures;
            if (missingProtocol != 0)
            {
                var names = ProtocolFeatureNames.Format(missingProtocol);
                findings.Add(new PreflightFinding(PreflightSeverity.Error, "protocol-features",
                    $"protocol features acked on the source are not offered: {string.Join(", ", names)} ({FeatureText.Hex(missingProtocol)})", names));
            }

            if (record.DeviceStateVersion is { } sv && (record.AckedProtocolFeatures & (ulong)Virtio.VhostUserProtocolFeatures.DeviceState) != 0
                && dst.DeviceStateVersions.Count > 0 && !dst.DeviceStateVersions.Contains(sv))
            {
                findings.Add(Error("device-state-version",
                    $"the source backend writes device-state format {sv}; the destination loads only {string.Join(", ", dst.DeviceStateVersions)}: it would refuse the state at CHECK_DEVICE_STATE " +
                    "and the migration would fail with it (QEMU 10.0: \"Back-end failed to process its internal state\")"));
            }

            if (record.QueueCount > dst.Queues)
            {
                findings.Add(Error("queue-count", $"the source served {record.QueueCount} virtqueues, the destination serves {dst.Queues}"));
            }

            foreach (var (index, size) in record.QueueSizes)
            {
                if (index >= dst.Queues)
                {
                    findings.Add(Error("queue-count", $"queue {index} is in use but the destination serves only {dst.Queues} virtqueues"));
                }

                if (size > dst.MaxQueueSize)
                {
                    findings.Add(Error("ring-size", $"queue {index} has {size} descriptors, the destination accepts at most {dst.MaxQueueSize}"));
                }
            }

            if (record.Config.Length > dst.ConfigSize)
            {
                findings.Add(Error("config-size", $"the guest saw {record.Config.Length} config bytes, the destination has {dst.ConfigSize}"));
            }

            var srcConfig = VirtioConfigFields.Decode(type, acked, record.Config.Span);
            var dstConfig = new Dictionary<string, string>(dst.Config.ToDictionary(), StringComparer.Ordinal);
            if (profile is not null)
            {
                // A destination pinned to the profile presents the profile's config values.
                Overlay(dstConfig, "mtu", profile.Mtu);
                Overlay(dstConfig, "blk_size", profile.BlockSize);
                Overlay(dstConfig, "capacity", profile.Capacity);
            }

            foreach (var (field, value) in srcConfig)
            {
                if (dstConfig.TryGetValue(field, out string? other) && other != value)
                {
                    findings.Add(Error("config-mismatch", $"config field {field} is {value} on the source and {other} on the destination"));
                }
            }
        }

        if (profile is not null)
        {
            ulong missing = profile.Features & ~dst.VirtioFeatures;
            if (missing != 0)
            {
                var names = VirtioFeatures.Names(type, missing);
                findings.Add(new PreflightFinding(PreflightSeverity.Error, "profile-unsupported",
                    $"profile {profile} needs features the destination does not offer: {string.Join(", ", names)}", names));
            }

            if (profile.MaxRingSize > dst.MaxQueueSize)
            {
                findings.Add(Error("profile-unsupported", $"profile {profile} has max_ring {profile.MaxRingSize}, the destination accepts at most {dst.MaxQueueSize}"));
            }

            if (profile.Queues > dst.Queues)
            {
                findings.Add(Error("profile-unsupported", $"profile {profile} has {profile.Queues} virtqueues, the destination serves {dst.Queues}"));
            }

            if (profile.Id is { } id)
            {
                var published = dst.Catalog?.Find(id);
                if (published is null)
                {
                    findings.Add(new PreflightFinding(PreflightSeverity.Warning, "profile-not-in-catalog",
                        $"the destination does not publish profile {id}; start it pinned with the value list {profile.Canonical}", NoFeatures));
                }
                else if (!published.SameInterface(profile))
                {
                    string diff = string.Join(", ", profile.Diff(published).Select(d => $"{d.Key} {d.This} -> {d.Other}"));
                    findings.Add(Error("profile-changed", $"the destination's profile {id} has different values: {diff}"));
                }
            }
        }

        if (offeredOnly is not null)
        {
            findings.Add(new PreflightFinding(PreflightSeverity.Warning, "profile-not-pinned",
                $"the VM is not pinned: the source offered {offeredOnly} by default; the destination is held to what the guest acked only (pin it to keep its interface fixed)", NoFeatures));
        }

        return new PreflightResult([.. findings.OrderBy(f => f.Severity)]);
    }

    /// <summary>
    /// The frontend rule: QEMU starts an incoming VM with the source's machine type, so a destination hypervisor that
    /// has no such machine type refuses to start (QEMU 7.2 for <c>pc-q35-10.0</c>: "unsupported machine type") and the
    /// migration fails while the source keeps running.
    /// </summary>
    private static void CheckFrontend(FrontendInfo? vm, FrontendInfo? host, List<PreflightFinding> findings)
    {
        if (vm?.Machine is not { } machine)
        {
            // A VM frontend read from a binary (frontend --qemu without --machine) says nothing about the VM either.
            if (host is not null)
            {
                string unknown = vm is null ? "the VM's frontend (hypervisor version, machine type) is not known" : $"the VM's machine type is not known (its frontend, {vm}, was recorded without one)";
                findings.Add(new PreflightFinding(PreflightSeverity.Warning, "frontend-not-checked",
                    $"the destination runs {host}, but {unknown}: give it with --vm-frontend or record it (vhost-compat frontend --qmp)", NoFeatures));
            }

            return;
        }

        switch (host?.CanLoad(machine))
        {
            case false:
                findings.Add(Error("machine-type", $"the VM runs machine type {machine} ({vm.Product} {vm.Version}); the destination's {host!.Product} {host.Version} has no such machine type and would refuse to start"));
                break;
            case null:
                findings.Add(new PreflightFinding(PreflightSeverity.Warning, "frontend-not-checked",
                    $"the VM runs machine type {machine} ({vm.Product} {vm.Version}); the destination's machine types are not known, so this was not checked (add them with vhost-compat frontend --qemu BIN --caps FILE)", NoFeatures));
                break;
        }
    }

    private static PreflightFinding Error(string code, string message) => new(PreflightSeverity.Error, code, message, NoFeatures);

    private static void Overlay<T>(Dictionary<string, string> config, string key, T? value)
        where T : struct, IFormattable
    {
        if (value is { } v)
        {
            config[key] = v.ToString(null, System.Globalization.CultureInfo.InvariantCulture);
        }
    }
}
