# The two commands of the README. Both set everything up first (idempotent).
PYTHON ?= python3

.PHONY: setup demo test bench

setup:
	@PYTHON=$(PYTHON) bash scripts/setup.sh

# Segment the bundled sample room with the bundled checkpoint.
demo: setup
	$(PYTHON) -m pointseg segment --out outputs/demo --overwrite

# CPU test suite (GPU tests skip cleanly without CUDA).
test: setup
	$(PYTHON) -m pytest -q tests

bench: setup
	$(PYTHON) tools/bench_resgcn.py
