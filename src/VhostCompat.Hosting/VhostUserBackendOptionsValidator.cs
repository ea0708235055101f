using Microsoft.Extensions.Options;
using VhostCompat.Backend;

namespace VhostCompat.Hosting;

/// <summary>Runs <see cref="VhostUserBackendOptions.Validate"/> for every named instance of the options.</summary>
internal sealed class VhostUserBackendOptionsValidator : IValidateOptions<VhostUserBackendOptions>
{
    public ValidateOptionsResult Validate(string? name, VhostUserBackendOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        try
        {
            options.Validate();
            return ValidateOptionsResult.Success;
        }
        catch (ArgumentException ex)
        {
            string backend = string.IsNullOrEmpty(name) ? "vhost-user backend" : $"vhost-user backend '{name}'";
            string setting = ex.ParamName is { Length: > 0 } p ? $"{nameof(VhostUserBackendOptions)}.{p}" : nameof(VhostUserBackendOptions);
            return ValidateOptionsResult.Fail($"{backend}: {setting} is invalid: {ex.Message}");
        }
    }
}
