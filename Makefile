# `make demo`: set up .venv and optimize the built-in digits example for the CPU.
# `make test`: set up .venv, lint (`make lint`, ruff) and run the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of torch, installed before edgeml so the resolver never pulls a CUDA build.
TORCH ?= torch==2.13.0

.PHONY: setup demo lint test bench-setup bench-fashion-mnist bench-mobile bench bench-roofline clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[all,test]"
	touch $@

demo: setup
	$(BIN)/edgeml optimize --example digits --target cpu -o edgeml-out/digits-cpu --force

lint: setup
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest

bench-setup: setup
	$(BIN)/python -m pip install --quiet -e ".[all,bench]"

# Compression passes on a CNN trained on Fashion-MNIST (Debian's dataset-fashion-mnist).
bench-fashion-mnist: setup
	test -d /usr/share/datasets/fashion-mnist || apt-get install -y dataset-fashion-mnist
	$(BIN)/python -m benchmarks.fashion_mnist --threads 1 --measure-seconds 3

# The mobile target (LiteRT) on the digits example and EfficientNet-Lite0.
bench-mobile: bench-setup
	$(BIN)/python -m benchmarks.mobile --threads 1 --measure-seconds 2

# edgeml against ONNX Runtime, OpenVINO/NNCF and Neural Compressor on three models, in one run: writes
# benchmarks/RESULTS.md and benchmarks/results/peers.json.
bench: bench-setup
	test -d /usr/share/datasets/fashion-mnist || apt-get install -y dataset-fashion-mnist
	$(BIN)/python -m benchmarks.peers --threads 1 --measure-seconds 2 --rounds 3

# Roofline latency prediction against ONNX Runtime measured here.
bench-roofline: bench-setup
	$(BIN)/python -m benchmarks.roofline --threads 1 --measure-seconds 2 --rounds 3

clean:
	rm -rf $(VENV) edgeml-out .pytest_cache
