"""Benchmark specs (TOML package data) and the speed benchmarks of metazoo."""
