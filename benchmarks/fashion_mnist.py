"""Compression passes on a CNN trained on Fashion-MNIST: FP32, INT8, pruned, pruned + distilled,
pruned + distilled + INT8, each judged on the 10,000 test images and timed with ONNX Runtime.

    python -m benchmarks.fashion_mnist [--data /usr/share/datasets/fashion-mnist] [--threads 1]

The data is Debian's `dataset-fashion-mnist` package (`apt-get install dataset-fashion-mnist`).
The CNN is trained here (seeded); every step runs through edgeml's own API (`optimize`, `prune`,
`distill`), and the table is printed and written to benchmarks/results/fashion-mnist.md with the
raw records beside it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import edgeml
from edgeml.compress.distill import DistillConfig
from edgeml.compress.prune import StructuredConfig
from edgeml.inputs.data import Dataset, split
from edgeml.measure.machine import machine_info
from edgeml.pipeline import single_pass
from edgeml.runtimes.base import package_version

SEED = 0
EPOCHS = 4
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


class FashionCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(128 * 3 * 3, 256), nn.ReLU(), nn.Linear(256, 10))

    def forward(self, input):
        return self.classifier(self.features(input))


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): magic, dimensions, then uint8 data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(root: Path) -> tuple[Dataset, Dataset]:
    def part(prefix: str, name: str) -> Dataset:
        x = read_idx(root / f"{prefix}-images-idx3-ubyte.gz").astype(np.float32)[:, None] / 255.0
        y = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
        return Dataset({"input": x}, y, f"Fashion-MNIST {name}", classes=CLASSES)
    return part("train", "train"), part("t10k", "test")


def train(model: nn.Module, data: Dataset, epochs: int) -> None:
    torch.manual_seed(SEED)
    x, y = torch.from_numpy(data.inputs["input"]), torch.from_numpy(data.labels)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for epoch in range(epochs):
        started = time.perf_counter()
        for idx in torch.randperm(len(x), generator=gen).split(128):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        print(f"  train epoch {epoch + 1}/{epochs}: {time.perf_counter() - started:.0f} s", flush=True)
    model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--measure-seconds", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"{args.data} not found: apt-get install dataset-fashion-mnist, or pass --data")
    torch.manual_seed(SEED)
    torch.set_num_threads(max(2, args.threads))
    work = args.out / "fashion-mnist-work"
    work.mkdir(parents=True, exist_ok=True)

    train_all, test = load(args.data)
    calibration, train_set = split(train_all, 1000 / len(train_all), SEED)   # 1,000 images calibrate INT8
    for name, d in (("calib", calibration), ("test", test), ("train", train_set)):
        np.savez(work / f"{name}.npz", input=d.inputs["input"], labels=d.labels)

    print(f"Training the CNN on {len(train_set)} images ({EPOCHS} epochs)", flush=True)
    model = FashionCNN()
    train(model, train_set, EPOCHS)
    torch.save(model.state_dict(), work / "cnn.pt")

    common = dict(calib_data=work / "calib.npz", eval_data=work / "test.npz", threads=args.threads,
                  measure_seconds=args.measure_seconds, quantizer="ort", force=True)
    factory = dict(model="benchmarks.fashion_mnist:FashionCNN", weights=work / "cnn.pt",
                   input_shapes=["input:?x1x28x28"])
    print("FP32 and INT8", flush=True)
    base = edgeml.optimize(factory["model"], weights=factory["weights"], input_shapes=factory["input_shapes"],
                           out=work / "base", **common)
    print("Pruning 50% of channels", flush=True)
    single_pass.prune(**factory, structured=StructuredConfig(ratio=0.5), data=work / "train.npz",
                      eval_data=work / "test.npz", out=work / "pruned", force=True)
    pruned = edgeml.optimize(work / "pruned" / "model.pt2", precision="fp32", out=work / "pruned-ort", **common)
    print("Distilling the pruned model from the original", flush=True)
    single_pass.distill(**factory, student=work / "pruned" / "model.pt2", train_data=work / "train.npz",
                        eval_data=work / "test.npz", config=DistillConfig(epochs=15, patience=3, seed=SEED),
                        out=work / "distilled", force=True)
    distilled = edgeml.optimize(work / "distilled" / "model.pt2", out=work / "distilled-ort", **common)

    prune_record = json.loads((work / "pruned" / "report.json").read_text())
    rows = [("FP32", base, "onnxruntime-fp32"), ("INT8", base, "onnxruntime-int8"),
            ("pruned 50%", pruned, "onnxruntime-fp32"), ("pruned 50% + distilled", distilled, "onnxruntime-fp32"),
            ("pruned 50% + distilled + INT8", distilled, "onnxruntime-int8")]
    write_results(args, rows, prune_record, base)


def write_results(args, rows, prune_record: dict, base) -> None:
    reference = next(r for r in base.rows if r.name == "onnxruntime-fp32")
    machine = machine_info(args.threads)
    lines = [
        "# Fashion-MNIST CNN: compression passes",
        "",
        f"Command: `python -m benchmarks.fashion_mnist --threads {args.threads} --measure-seconds "
        f"{args.measure_seconds}`",
        f"Measured {datetime.now(timezone.utc).date()} on {machine['cpu']} ({machine['architecture']}, "
        f"{machine['logical_cores']} logical cores, {args.threads} thread(s) used), "
        f"Python {platform.python_version()}; "
        + ", ".join(f"{p} {package_version(p)}" for p in ("torch", "onnxruntime", "torch_pruning")) + ".",
        "Accuracy on the 10,000 Fashion-MNIST test images; latency measured here with ONNX Runtime, batch 1, "
        "after warm-up (p50 with bootstrap 95% CI).",
        f"Pruning: {prune_record['prune']['macs_before']:,} -> {prune_record['prune']['macs_after']:,} MACs "
        f"({prune_record['prune']['macs_ratio']:.2f}x fewer), parameters {prune_record['prune']['params_before']:,} -> "
        f"{prune_record['prune']['params_after']:,}.",
        "",
        "| model | test accuracy | ORT p50 ms (95% CI) | speed-up vs FP32 | size MB |",
        "|---|---|---|---|---|",
    ]
    raw = []
    for label, run, name in rows:
        row = next(r for r in run.rows if r.name == name)
        lat = row.latency
        lo, hi = lat["p50_ci95_ms"]
        lines.append(f"| {label} | {row.metrics['accuracy'] * 100:.2f} % | {lat['p50_ms']:.3f} ({lo:.3f}–{hi:.3f}) | "
                     f"{reference.latency['p50_ms'] / lat['p50_ms']:.2f}x | {row.size_bytes / 1e6:.2f} |")
        raw.append({"model": label, "run": run.output, "row": name, "accuracy": row.metrics["accuracy"],
                    "latency": lat, "size_bytes": row.size_bytes})
    table = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fashion-mnist.md").write_text(table)
    (args.out / "fashion-mnist.json").write_text(json.dumps({"machine": machine, "rows": raw,
                                                              "prune": prune_record["prune"]}, indent=2) + "\n")
    print(table)


if __name__ == "__main__":
    main()
