"""Benchmarks: offline task suites, the method runner and peer baselines."""
