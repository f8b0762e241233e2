"""The branching comparison (benchmarks/bench_compare.py): one module per method family."""
