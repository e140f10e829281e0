"""Benchmarks: each case runs its baseline and ours interleaved in one process.

Run them with ``make bench`` (``python -m benchmarks``); ``--quick`` uses tiny counts.
"""
