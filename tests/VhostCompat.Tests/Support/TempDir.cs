namespace VhostCompat.Tests.Support;

/// <summary>A temporary directory for one test, removed with everything in it.</summary>
internal sealed class TempDir(string prefix) : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory(prefix).FullName;

    /// <summary>Writes <paramref name="content"/> to <paramref name="name"/> in the directory and returns its path.</summary>
    public string Write(string name, string content)
    {
        string path = Combine(name);
        File.WriteAllText(path, content);
        return path;
    }

    public string Combine(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose() => Directory.Delete(Path, recursive: true);
}
