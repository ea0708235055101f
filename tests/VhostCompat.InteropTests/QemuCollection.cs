namespace VhostCompat.InteropTests;

/// <summary>QEMU guests under TCG use a whole core each; on a 2-core machine they run one at a time.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class QemuCollection
{
    public const string Name = "qemu guests";
}
