# The two commands of the README. Both set everything up first (idempotent).
PYTHON ?= python3

.PHONY: setup demo test bench

setup:
	@PYTHON=$(PYTHON) bash scripts/setup.sh

# Segment the bundled sample room with the default checkpoint (the real-trained DGCNN, fold 5).
demo: setup
	$(PYTHON) -m pointseg segment --out outputs/demo --overwrite

# CPU test suite (GPU tests skip cleanly without CUDA).
test: setup
	$(PYTHON) -m pytest -q tests

bench: setup
	$(PYTHON) tools/bench_resgcn.py
