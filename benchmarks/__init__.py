"""Benchmark scripts (`python benchmarks/NAME.py`) and the GPU check (`python -m benchmarks.gpu`)."""
