"""tunefit profiler: measures real peak memory (built in the 'Profiler worker' issue)."""
