"""Benchmarks and the PyTorch reference runners they compare against (not part of the installed package)."""
