"""Programs the benchmark runs in child processes (each is run by its file path)."""
