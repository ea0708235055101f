using VhostCompat.Compat;
using VhostCompat.Virtio;

namespace VhostCompat.Cli;

/// <summary><c>catalog verify</c>, <c>caps validate</c>, <c>record show</c>.</summary>
internal static class DocumentCommands
{
    public static int CatalogVerify(CliIo io, string capsPath, string lockPath, bool update, bool json)
    {
        var caps = CliSupport.LoadCaps(capsPath);
        var catalog = caps.Catalog ?? throw new CliException($"{capsPath}: the capability document publishes no profile catalog");
        var problems = catalog.ValidateAgainst(caps.VirtioFeatures, caps.Queues, (ushort)caps.MaxQueueSize).ToList();
        IReadOnlyList<LockFinding> findings;
        bool lockExists = File.Exists(lockPath);
        bool written = false;
        if (update && problems.Count == 0)
        {
            findings = ProfileLock.Update(lockPath, catalog);
            written = !findings.Any(f => f.IsError);
        }
        else if (lockExists)
        {
            findings = ProfileLock.Verify(catalog, ProfileLock.Load(lockPath));
        }
        else
        {
            throw new CliException($"{lockPath}: no such lock file; run with --update to create it");
        }

        bool ok = problems.Count == 0 && !findings.Any(f => f.IsError) && (update || !findings.Any());
        if (json)
        {
            io.Out.WriteLine(CliSupport.Json(w =>
            {
                w.WriteStartObject();
                w.WriteBoolean("ok", ok);
                w.WriteBoolean("lock-written", written);
                CliSupport.WriteStrings(w, "device-problems", problems);
                w.WriteStartArray("lock-findings");
                foreach (var f in findings)
                {
                    w.WriteStartObject();
                    w.WriteString("profile", f.ProfileId);
                    w.WriteString("kind", f.Kind);
                    w.WriteBoolean("error", f.IsError);
                    w.WriteString("message", f.Message);
                    w.WriteEndObject();
                }

                w.WriteEndArray();
                w.WriteEndObject();
            }));
        }
        else
        {
            foreach (string p in problems)
            {
                io.Out.WriteLine($"error: {p}");
            }

            foreach (var f in findings)
            {
                io.Out.WriteLine($"{(f.IsError ? "error" : update ? "added" : "error")}: {f.Message}");
            }

            io.Out.WriteLine(ok ? (written ? $"ok: {catalog.Profiles.Count} profiles, lock {lockPath} written" : $"ok: {catalog.Profiles.Count} profiles match {lockPath}") : "catalog verification failed");
        }

        return ok ? ExitCodes.Ok : ExitCodes.No;
    }

    public static int CapsValidate(CliIo io, string path, bool json)
    {
        var caps = CliSupport.LoadCaps(path);
        if (json)
        {
            // The normalised document: what this SDK reads from the file.
            io.Out.WriteLine(CapabilityDocument.Render(caps));
            return ExitCodes.Ok;
        }

        io.Out.WriteLine($"{CliSupport.Label(path)}: valid {CapabilityDocument.TypeName(caps.DeviceType)} capability document");
        io.Out.WriteLine($"  virtio features   {CliSupport.Hex(caps.VirtioFeatures)} {VirtioFeatures.Format(caps.DeviceType, caps.VirtioFeatures)}");
        io.Out.WriteLine($"  protocol features {CliSupport.Hex(caps.ProtocolFeatures)} {string.Join(',', ProtocolFeatureNames.Format(caps.ProtocolFeatures))}");
        io.Out.WriteLine($"  queues {caps.Queues}, max ring {caps.MaxQueueSize}, config {caps.ConfigSize} bytes, memory slots {caps.MaxMemorySlots}");
        foreach (var (k, v) in caps.Config)
        {
            io.Out.WriteLine($"  config {k} = {v}");
        }

        if (caps.Catalog is { } c)
        {
            foreach (var p in c.Profiles)
            {
                io.Out.WriteLine($"  profile {p.Id}{(p == c.Latest ? " (latest)" : string.Empty)}");
            }
        }

        if (caps.Frontend is { } f)
        {
            io.Out.WriteLine($"  frontend {f}, {f.Machines.Count} machine types");
        }

        return ExitCodes.Ok;
    }

    public static int RecordShow(CliIo io, string path, bool json)
    {
        var record = AckedStateRecord.Parse(CliSupport.ReadInput(path), CliSupport.Label(path));
        if (json)
        {
            io.Out.Write(record.ToJson());
            return ExitCodes.Ok;
        }

        var t = record.DeviceType;
        io.Out.WriteLine($"{record.Key}: {CapabilityDocument.TypeName(t)} device, generation {record.Generation}, saved {record.SavedAt:u}");
        io.Out.WriteLine($"  acked features          {CliSupport.Hex(record.AckedFeatures)} {VirtioFeatures.Format(t, record.AckedFeatures)}");
        io.Out.WriteLine($"  acked protocol features {CliSupport.Hex(record.AckedProtocolFeatures)} {string.Join(',', ProtocolFeatureNames.Format(record.AckedProtocolFeatures))}");
        io.Out.WriteLine($"  profile {(record.Profile is null ? "(none)" : (record.Profile.Id ?? record.Profile.Canonical) + (record.ProfilePinned ? " (pinned)" : " (offered by default, not pinned)"))}");
        io.Out.WriteLine($"  queues {record.QueueCount}: {string.Join(", ", record.QueueSizes.Select(kv => $"{kv.Key}={kv.Value}"))}");
        io.Out.WriteLine($"  config {Convert.ToHexStringLower(record.Config.Span)}");
        if (record.Frontend is { } f)
        {
            io.Out.WriteLine($"  frontend {f}");
        }

        return ExitCodes.Ok;
    }
}
