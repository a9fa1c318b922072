# `make demo`: set up .venv and optimize the built-in digits example for the CPU.
# `make test`: set up .venv and run the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of torch, installed before edgeml so the resolver never pulls a CUDA build.
TORCH ?= torch==2.13.0

.PHONY: setup demo test bench-fashion-mnist clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[all,test]"
	touch $@

demo: setup
	$(BIN)/edgeml optimize --example digits --target cpu -o edgeml-out/digits-cpu --force

test: setup
	$(BIN)/python -m pytest

# Compression passes on a CNN trained on Fashion-MNIST (Debian's dataset-fashion-mnist).
bench-fashion-mnist: setup
	test -d /usr/share/datasets/fashion-mnist || apt-get install -y dataset-fashion-mnist
	$(BIN)/python -m benchmarks.fashion_mnist --threads 1 --measure-seconds 3

clean:
	rm -rf $(VENV) edgeml-out .pytest_cache
