"""Report logic of the benchmarks (pure functions over the raw run files), importable by tests."""
