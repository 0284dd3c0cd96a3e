"""Benchmarks: each prints a table with the machine; results go to BENCHMARKS.md."""
