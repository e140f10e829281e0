"""Benchmarks: each case runs its baseline and ours interleaved in one process."""
