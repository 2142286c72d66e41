"""Benchmarks (`make bench`): measured speed of the real system on this machine."""
