# The two commands of the README. Both set everything up first (scripts/setup.sh, idempotent).
#
# Every target runs in one environment: the activated virtual/conda environment if there is one,
# else the project's .venv, created from $(PYTHON) (the system python3 by default; Debian's and
# Ubuntu's refuse pip installs, PEP 668). scripts/setup.sh decides which; ENV_PYTHON is its answer.
PYTHON ?= python3
ENV_PYTHON := $(shell PYTHON='$(PYTHON)' bash scripts/setup.sh --env-python)

.PHONY: setup demo test bench

setup:
	@PYTHON='$(PYTHON)' bash scripts/setup.sh

# Segment the bundled sample room with the default checkpoint (the real-trained DGCNN, fold 5).
demo: setup
	'$(ENV_PYTHON)' -m pointseg segment --out outputs/demo --overwrite

# CPU test suite (GPU tests skip cleanly without CUDA; slow tests included).
test: setup
	'$(ENV_PYTHON)' -m pytest -q tests

bench: setup
	'$(ENV_PYTHON)' tools/bench_resgcn.py
