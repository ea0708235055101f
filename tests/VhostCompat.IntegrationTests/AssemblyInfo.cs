// The leak oracles count this process's fds and mappings: tests must not run concurrently.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
