"""Benchmarks: run from the repository root as modules (``python -m bench.ingest``), so they can import tests' fakes."""
