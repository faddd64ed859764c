"""Helpers for the benchmarks in bench/*.py (not benchmarks themselves)."""
