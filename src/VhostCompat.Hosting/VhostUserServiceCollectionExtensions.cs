using System.Diagnostics.CodeAnalysis;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using VhostCompat.Backend;
using VhostCompat.Hosting;

// Extension methods on IServiceCollection live in this namespace by convention, so they show up without a using.
namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers vhost-user backends as hosted services of the .NET generic host.</summary>
public static class VhostUserServiceCollectionExtensions
{
    /// <summary>
    /// Adds a vhost-user backend serving <typeparamref name="TDevice"/>, run by a hosted service from host start
    /// to host stop. The device is resolved from dependency injection (registered as a singleton if the
    /// application did not register it). The options (<see cref="VhostUserBackendOptions"/>, unnamed) are
    /// validated when the host starts; a bad setting fails the start with an <see cref="OptionsValidationException"/>
    /// naming it. Logging goes through the host's <see cref="ILoggerFactory"/>; stopping the host cancels
    /// the backend and waits for it (rings stopped, connection and listening socket closed). A backend that ends
    /// by itself (it failed, or its inherited connected fd / non-reconnecting client session is over) stops the host.
    /// </summary>
    /// <typeparam name="TDevice">The device implementation.</typeparam>
    /// <param name="services">The service collection.</param>
    /// <param name="configure">Sets the options (socket path or inherited fd, client mode, profile, state directory, workers, ...).</param>
    /// <returns><paramref name="services"/>, for chaining.</returns>
    /// <exception cref="InvalidOperationException">An unnamed backend was already added.</exception>
    public static IServiceCollection AddVhostUserBackend<[DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] TDevice>(
        this IServiceCollection services, Action<VhostUserBackendOptions>? configure = null)
        where TDevice : VhostUserDevice
    {
        ArgumentNullException.ThrowIfNull(services);
        services.TryAddSingleton<TDevice>();
        return AddCore(services, Microsoft.Extensions.Options.Options.DefaultName, configure, static (sp, _) => sp.GetRequiredService<TDevice>());
    }

    /// <summary>
    /// Adds a named vhost-user backend serving <typeparamref name="TDevice"/>, so one host can run several (one
    /// per socket). The device is the keyed service <typeparamref name="TDevice"/> under <paramref name="name"/>
    /// (registered as a keyed singleton if the application did not register it: each backend gets its own
    /// instance); the options are the named options <paramref name="name"/>, validated when the host starts.
    /// Otherwise as <see cref="AddVhostUserBackend{TDevice}(IServiceCollection, Action{VhostUserBackendOptions}?)"/>.
    /// </summary>
    /// <typeparam name="TDevice">The device implementation.</typeparam>
    /// <param name="services">The service collection.</param>
    /// <param name="name">The backend's name: options name, device key, and shown in log messages.</param>
    /// <param name="configure">Sets the options of this backend.</param>
    /// <returns><paramref name="services"/>, for chaining.</returns>
    /// <exception cref="InvalidOperationException">A backend with this name was already added.</exception>
    public static IServiceCollection AddVhostUserBackend<[DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] TDevice>(
        this IServiceCollection services, string name, Action<VhostUserBackendOptions>? configure = null)
        where TDevice : VhostUserDevice
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(name);
        if (name.Length == 0)
        {
            return services.AddVhostUserBackend<TDevice>(configure);
        }

        services.TryAddKeyedSingleton<TDevice>(name);
        return AddCore(services, name, configure, static (sp, n) => sp.GetRequiredKeyedService<TDevice>(n));
    }

    private static IServiceCollection AddCore(
        IServiceCollection services, string name, Action<VhostUserBackendOptions>? configure, Func<IServiceProvider, string, VhostUserDevice> device)
    {
        foreach (ServiceDescriptor d in services)
        {
            if (d.ServiceType == typeof(BackendRegistration) && d.ImplementationInstance is BackendRegistration r && r.Name == name)
            {
                throw new InvalidOperationException(name.Length == 0
                    ? "a vhost-user backend without a name was already added; give each backend of a host its own name"
                    : $"a vhost-user backend named '{name}' was already added");
            }
        }

        services.AddSingleton(new BackendRegistration(name));
        OptionsBuilder<VhostUserBackendOptions> options = services.AddOptions<VhostUserBackendOptions>(name);
        if (configure is not null)
        {
            options.Configure(configure);
        }

        options.ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<VhostUserBackendOptions>, VhostUserBackendOptionsValidator>());
        services.AddSingleton<IHostedService>(sp => new VhostUserBackendService(
            name,
            device(sp, name),
            sp.GetRequiredService<IOptionsMonitor<VhostUserBackendOptions>>().Get(name),
            sp.GetRequiredService<ILoggerFactory>(),
            sp.GetService<IHostApplicationLifetime>()));
        return services;
    }

    /// <summary>Marks a backend name as taken in the service collection.</summary>
    private sealed record BackendRegistration(string Name);
}
