"""Benchmarks (runnable as ``python -m benchmarks.<name>``) and their shared fake endpoint."""
