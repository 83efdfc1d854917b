"""Benchmarks (`make bench`): ratios against a baseline run side by side in the same process."""
