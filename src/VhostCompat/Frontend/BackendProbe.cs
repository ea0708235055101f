using VhostCompat.Compat;
using VhostCompat.Protocol;
using VhostCompat.Virtio;

namespace VhostCompat.Frontend;

/// <summary>
/// Asks a live backend what it offers, as a frontend would, without mapping or starting anything: GET_FEATURES,
/// GET/SET_PROTOCOL_FEATURES (acking only MQ, REPLY_ACK, CONFIG, CONFIGURE_MEM_SLOTS), SET_OWNER, GET_QUEUE_NUM,
/// GET_MAX_MEM_SLOTS, GET_CONFIG and — with REPLY_ACK — the largest SET_VRING_NUM accepted on ring 0 (32768
/// halving down; 32768 is assumed when it cannot be probed). Used by <c>vhost-compat probe</c> and the proxy.
/// </summary>
public static class BackendProbe
{
    /// <summary>Probes the backend listening on <paramref name="socket"/>; the whole probe is bounded by four times <paramref name="timeout"/>.</summary>
    /// <param name="socket">The backend's Unix socket.</param>
    /// <param name="type">The device type (vhost-user does not carry it).</param>
    /// <param name="timeout">How long each reply may take.</param>
    /// <param name="probeRing">Probe the largest ring size with SET_VRING_NUM (needs REPLY_ACK).</param>
    /// <param name="cancellationToken">Cancels the probe.</param>
    /// <exception cref="System.Net.Sockets.SocketException">The socket cannot be reached.</exception>
    /// <exception cref="VhostUserRequestException">The backend refused a question.</exception>
    public static async Task<BackendCapabilities> ProbeAsync(string socket, VirtioDeviceType type, TimeSpan timeout, bool probeRing, CancellationToken cancellationToken)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        cts.CancelAfter(timeout * 4);
        var ct = cts.Token;
        await using var frontend = await VhostUserFrontend.ConnectAsync(socket, timeout, ct).ConfigureAwait(false);
        ulong features = await frontend.GetFeaturesAsync(ct).ConfigureAwait(false);
        ulong protocol = 0;
        if ((features & VirtioFeatureBits.ProtocolFeatures) != 0)
        {
            protocol = (ulong)await frontend.GetProtocolFeaturesAsync(ct).ConfigureAwait(false);
            var wanted = VhostUserProtocolFeatures.Mq | VhostUserProtocolFeatures.ReplyAck | VhostUserProtocolFeatures.Config | VhostUserProtocolFeatures.ConfigureMemSlots;
            await frontend.SetProtocolFeaturesAsync((VhostUserProtocolFeatures)protocol & wanted, ct).ConfigureAwait(false);
        }

        await frontend.SetOwnerAsync(ct).ConfigureAwait(false);
        var acked = frontend.AckedProtocolFeatures;
        int queues = type == VirtioDeviceType.Net ? 2 : 1;
        ulong? queueNum = null;
        if ((acked & VhostUserProtocolFeatures.Mq) != 0)
        {
            queueNum = await frontend.GetQueueNumAsync(ct).ConfigureAwait(false);
            ulong q = type == VirtioDeviceType.Net ? 2 * Math.Min(queueNum.Value, 127) : Math.Min(queueNum.Value, 255);
            queues = (int)Math.Max(q, 1);
        }

        int slots = 8;
        if ((acked & VhostUserProtocolFeatures.ConfigureMemSlots) != 0)
        {
            slots = (int)Math.Clamp(await frontend.GetMaxMemSlotsAsync(ct).ConfigureAwait(false), 1, 509);
        }

        byte[] config = [];
        if ((acked & VhostUserProtocolFeatures.Config) != 0)
        {
            uint size = (uint)(VirtioDeviceTypes.Find(type)?.ConfigSize ?? 0);
            if (size > 0)
            {
                try
                {
                    config = await frontend.GetConfigAsync(0, size, ct).ConfigureAwait(false);
                }
                catch (VhostUserRequestException)
                {
                    config = [];
                }
            }
        }

        int maxRing = 32768;
        if (probeRing && (acked & VhostUserProtocolFeatures.ReplyAck) != 0)
        {
            for (int n = 32768; n >= 1; n /= 2)
            {
                try
                {
                    await frontend.SetVringNumAsync(0, n, ct).ConfigureAwait(false);
                    maxRing = n;
                    break;
                }
                catch (VhostUserRequestException)
                {
                }
            }
        }

        return BackendCapabilities.FromOffer(type, features, protocol, queues, maxRing, config, slots, queueNum);
    }
}
