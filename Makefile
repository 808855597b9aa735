# Quick start:  make demo   (the main job on real, offline data)
#               make test   (the test suite)
# Both set everything up first (scripts/setup.sh, idempotent).

.PHONY: setup demo test bench

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/datascout demo

test: setup
	.venv/bin/python -m pytest -q

bench: setup
	.venv/bin/python benchmarks/bench_scoring.py
