namespace VhostCompat.InteropTests.Harness;

/// <summary>The closing checks a single-guest test (QemuNetInteropTests, RngInteropTests) makes after its own ones.</summary>
public static class InteropVerdict
{
    /// <summary>Adds a problem for the backend's logged errors, QEMU's stderr error lines and a non-zero QEMU exit code.</summary>
    public static void AddBackendAndQemuProblems(List<string> problems, IReadOnlyList<string> backendErrors, IReadOnlyList<string> qemuErrors, int? qemuExit)
    {
        ArgumentNullException.ThrowIfNull(problems);
        ArgumentNullException.ThrowIfNull(backendErrors);
        ArgumentNullException.ThrowIfNull(qemuErrors);
        if (backendErrors.Count > 0)
        {
            problems.Add("backend logged errors:\n" + string.Join('\n', backendErrors));
        }

        if (qemuErrors.Count > 0)
        {
            problems.Add("QEMU stderr has error lines:\n" + string.Join('\n', qemuErrors));
        }

        if (qemuExit is not null and not 0)
        {
            problems.Add($"QEMU exited with code {qemuExit} (124 = killed by the harness timeout, 128+N = signal N)");
        }
    }

    /// <summary>Fails with every problem, the backend's request sequence (read only then) and the run's diagnostics.</summary>
    public static void FailOnProblems(IReadOnlyList<string> problems, Func<string> backendRequestSequence, InteropRun run)
    {
        ArgumentNullException.ThrowIfNull(problems);
        ArgumentNullException.ThrowIfNull(backendRequestSequence);
        ArgumentNullException.ThrowIfNull(run);
        if (problems.Count > 0)
        {
            Assert.Fail(string.Join("\n", problems.Select(p => "* " + p)) + "\nbackend requests: " + backendRequestSequence() + run.Diagnostics());
        }
    }
}
