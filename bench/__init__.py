"""Benchmarks: ``make bench`` runs them against a running stack and writes BENCHMARKS.md."""
