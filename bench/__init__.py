"""Benchmarks for edgehub-emu: reports with figures, run by `make bench`; never timed assertions."""
