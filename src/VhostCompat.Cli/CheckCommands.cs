using VhostCompat.Compat;
using VhostCompat.Frontend;
using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.Cli;

/// <summary>The files and sockets <c>check</c> was given (null: not given).</summary>
internal sealed record CheckInputs(string? Record, string? Profile, string? Type, string? SourceCaps, string? Caps, string? Socket, string? VmFrontend, string? Frontend);

/// <summary><c>check</c> and <c>probe</c>.</summary>
internal static class CheckCommands
{
    public static async Task<int> CheckAsync(CliIo io, CheckInputs inputs, TimeSpan timeout, bool json, CancellationToken cancellationToken)
    {
        var (recordPath, profileText, type, sourceCapsPath, capsPath, socket, vmFrontendPath, frontendPath) = inputs;
        if (vmFrontendPath is not null && recordPath is null)
        {
            throw new CliException("--vm-frontend needs --record (the frontend belongs to the VM the record describes)");
        }

        if (recordPath is null && profileText is null)
        {
            throw new CliException("give the source VM's --record and/or --profile");
        }

        if ((capsPath is null) == (socket is null))
        {
            throw new CliException("give the destination as exactly one of --caps FILE or --socket PATH");
        }

        var record = recordPath is null ? null : AckedStateRecord.Parse(CliSupport.ReadInput(recordPath), CliSupport.Label(recordPath));
        type ??= record is null ? null : CapabilityDocument.TypeName(record.DeviceType);
        BackendCapabilities destination = capsPath is not null
            ? CliSupport.LoadCaps(capsPath)
            : await ProbeAsync(socket!, CliSupport.ParseType(type ?? "net"), timeout, probeRing: true, cancellationToken).ConfigureAwait(false);

        if (vmFrontendPath is not null)
        {
            record = record!.WithFrontend(FrontendInfo.Parse(CliSupport.ReadInput(vmFrontendPath), CliSupport.Label(vmFrontendPath)));
        }

        if (frontendPath is not null)
        {
            destination = destination.WithFrontend(FrontendInfo.Parse(CliSupport.ReadInput(frontendPath), CliSupport.Label(frontendPath)));
        }

        InterfaceProfile? profile = null;
        if (profileText is not null)
        {
            // An id is resolved through the source's catalog when given, otherwise through the destination's.
            if (InterfaceProfile.IsValueList(profileText) || sourceCapsPath is not null)
            {
                profile = ProfileCommands.Resolve(profileText, type, sourceCapsPath);
            }
            else
            {
                var catalog = destination.Catalog ?? throw new CliException($"profile id '{profileText}' cannot be resolved: the destination publishes no catalog; give --source-caps or a value list");
                profile = catalog.Find(profileText) ?? throw new CliException($"profile id '{profileText}' is not published by the destination (incompatible unless pinned by value list); give --source-caps to check its values");
            }
        }

        var result = PreflightCheck.Check(profile, record, destination);
        io.Out.Write(json ? result.ToJson() + "\n" : result.ToText());
        return result.ExitCode;
    }

    public static async Task<int> ProbeCommandAsync(CliIo io, string socket, string type, TimeSpan timeout, bool probeRing, bool json, CancellationToken cancellationToken)
    {
        var caps = await ProbeAsync(socket, CliSupport.ParseType(type), timeout, probeRing, cancellationToken).ConfigureAwait(false);
        if (json)
        {
            io.Out.WriteLine(CapabilityDocument.Render(caps));
            return ExitCodes.Ok;
        }

        io.Out.WriteLine($"{socket}: {CapabilityDocument.TypeName(caps.DeviceType)} backend");
        io.Out.WriteLine($"  virtio features   {CliSupport.Hex(caps.VirtioFeatures)} {VirtioFeatures.Format(caps.DeviceType, caps.VirtioFeatures)}");
        io.Out.WriteLine($"  protocol features {CliSupport.Hex(caps.ProtocolFeatures)} {string.Join(',', ProtocolFeatureNames.Format(caps.ProtocolFeatures))}");
        string capped = caps.QueueNumReply is { } n && (caps.DeviceType == VirtioDeviceType.Net ? 2 * n : n) > (ulong)caps.Queues ? " (capped: at most 255 virtqueues are modelled)" : string.Empty;
        io.Out.WriteLine($"  queue num {(caps.QueueNumReply is { } q ? q.ToString(System.Globalization.CultureInfo.InvariantCulture) : "(no MQ)")} -> {caps.Queues} virtqueues{capped}");
        io.Out.WriteLine($"  max ring size {caps.MaxQueueSize}{(probeRing ? string.Empty : " (not probed)")}");
        io.Out.WriteLine($"  memory slots {caps.MaxMemorySlots}, config {caps.ConfigSize} bytes");
        foreach (var (k, v) in caps.Config)
        {
            io.Out.WriteLine($"  config {k} = {v}");
        }

        return ExitCodes.Ok;
    }

    /// <summary>Probes a live backend (<see cref="BackendProbe"/>); failures become one-line <see cref="CliException"/>s.</summary>
    public static async Task<BackendCapabilities> ProbeAsync(string socket, VirtioDeviceType type, TimeSpan timeout, bool probeRing, CancellationToken cancellationToken)
    {
        try
        {
            return await BackendProbe.ProbeAsync(socket, type, timeout, probeRing, cancellationToken).ConfigureAwait(false);
        }
        catch (System.Net.Sockets.SocketException ex)
        {
            throw new CliException($"{socket}: {ex.Message}");
        }
        catch (IOException ex)
        {
            throw new CliException($"{socket}: {ex.Message}");
        }
        catch (TimeoutException ex)
        {
            throw new CliException($"{socket}: {ex.Message}");
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new CliException($"{socket}: the backend did not answer in time");
        }
        catch (VhostUserRequestException ex)
        {
            throw new CliException($"{socket}: {ex.Message}");
        }
    }
}
