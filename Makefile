VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup standin test unit lint bench demo

## setup: venv + project + test tools; on Debian as root also Docker, compose, registry, debootstrap
setup:
	@bash scripts/setup.sh

## standin: build (or reuse) both offline stand-ins for the Hugging Face PyTorch DLC (conda and venv flavours)
standin: setup
	$(BIN)/smimg dev standin --quiet

## test: the whole suite, against a real Docker engine (installs and starts what it needs, both stand-ins included)
test: setup
	@if docker info >/dev/null 2>&1; then $(BIN)/smimg dev standin --quiet; fi
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## unit: the unit tests only (no Docker, no network), in seconds
unit: setup
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

## lint: ruff and mypy
lint: setup
	$(BIN)/ruff check toolkit entrypoints tests bench examples
	$(BIN)/ruff format --check toolkit entrypoints tests bench examples
	$(BIN)/mypy

## bench: smimg against its baselines, side by side; writes bench/results.md (about 10 minutes here)
bench: standin
	$(BIN)/python bench/run.py $(BENCH_ARGS)

## demo: build examples/tiny-lm on the stand-in and train it as a 2-instance local job
demo: standin
	$(BIN)/smimg build -f examples/tiny-lm
	$(BIN)/smimg local run -f examples/tiny-lm --instances 2 --hp steps=20 --output demo-output
