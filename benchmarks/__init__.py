"""Developer benchmarks (not installed with the package): store, engine, retrieval and TUI figures.

Run them through `scripts/bench_*` (each sets up first) or as `python -m benchmarks.<name>` from the
repository root. `sense-local bench`, the method comparison users run, stays in `sense_local.bench`.
"""
