"""edgeml side by side with the tools users would pick instead, on this CPU, in one run.

    python -m benchmarks.peers [--threads 1] [--measure-seconds 2] [--rounds 3]
                               [--models cnn,efficientnet-fashion,efficientnet,minilm] [--quick]

Four cases (a CNN trained here on Fashion-MNIST; EfficientNet-Lite0 fine-tuned here on Fashion-MNIST and
judged by top-1 accuracy; EfficientNet-Lite0 on photo crops, a stress test; all-MiniLM-L6-v2 at 128 tokens),
each made by every method (PyTorch eager, ONNX Runtime FP32 / static INT8 / dynamic INT8, NNCF INT8 on
OpenVINO, OpenVINO's default precision, Intel Neural Compressor's autotune, and edgeml's `optimize` for
the cpu and mobile targets, plus pruning and distillation for the CNN), judged on held-out data against
a budget fixed in advance, and timed at batch 1 in interleaved rounds. Writes benchmarks/RESULTS.md and
benchmarks/results/peers.json.

- cases: the models, their data and budgets;
- methods: each tool's recipe;
- timing: interleaved rounds and confidence intervals;
- verdict: headline ratios, roofline floors and the targets;
- report: RESULTS.md and peers.json.
"""
