"""Run the benchmark: `python -m benchmarks.peers --help`."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import re
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from benchmarks.peers import report, verdict
from benchmarks.peers.cases import CACHE, FASHION_MNIST, MODELS, SEED, Case, load_case
from benchmarks.peers.methods import BATCH, METHODS, Context
from edgeml.inputs.export import export_onnx
from edgeml.measure.evaluate import compare, predict
from edgeml.measure.latency import MeasureConfig
from edgeml.measure.paired_timing import interleave, summarize
from edgeml.measure.roofline import measure_host
from edgeml.measure.uncertainty import drop_uncertainty
from edgeml.report.record import Run
from edgeml.runtimes.pytorch import TorchRunner


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers",
                                     description="edgeml side by side with the tools users would pick instead")
    parser.add_argument("--threads", type=int, default=1, help="threads every method runs with (default 1)")
    parser.add_argument("--measure-seconds", type=float, default=2.0, help="timed seconds per method and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (default 3)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"a subset of {','.join(MODELS)}")
    parser.add_argument("--quick", action="store_true", help="small sample counts, for development")
    parser.add_argument("--fashion-mnist", type=Path, default=FASHION_MNIST)
    parser.add_argument("--cache", type=Path, default=CACHE,
                        help=f"fine-tuned weights, kept between runs (default {CACHE})")
    parser.add_argument("--out", type=Path, default=Path("benchmarks"), help="RESULTS.md here, results/ below")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")

    started = time.perf_counter()
    torch.manual_seed(SEED)
    build_threads = torch.get_num_threads()       # tools build with torch's default, as in a fresh process
    work = args.out / "results" / "peers-work"
    results = []
    for key in models:
        print(f"== {key}", flush=True)
        torch.set_num_threads(build_threads)
        case = load_case(key, work / key, args.quick, args.fashion_mnist, args.cache)
        results.append(benchmark(case, work / key, args, build_threads))
    print("== this host's roofline", flush=True)
    hosts = [measure_host(args.threads, repeats=10) for _ in range(args.rounds)]
    host = dataclasses.replace(hosts[0], peak_gops={p: max(h.peak_gops[p] for h in hosts) for p in hosts[0].peak_gops},
                               memory_bandwidth_gbs=max(h.memory_bandwidth_gbs for h in hosts))
    for result in results:
        result["headline"] = verdict.headline(result, host, args.threads)
    report.write(args, results, host, verdict.targets(results), time.perf_counter() - started)


def benchmark(case: Case, work: Path, args, build_threads: int) -> dict:
    """Build every method for `case`, judge it on the evaluation data, and time them all in interleaved rounds."""
    reference_runner = TorchRunner(case.source.callable, case.names, build_threads)
    reference = predict(reference_runner, case.evaluation, BATCH)
    reference_calibration = predict(reference_runner, case.calibration, BATCH)
    reference_quality = compare(reference, reference, case.evaluation.labels)[case.metric]
    confidence = top1_confidence(reference[0])
    if confidence is not None:
        print(f"   PyTorch FP32 on the evaluation data: median top-1 probability {confidence['median_top1']:.2f}, "
              f"{confidence['margin_under'] * 100:.1f} % with a top-1 margin under {MARGIN}", flush=True)
    started = time.perf_counter()
    onnx = work / "model.onnx"
    export_onnx(case.source, onnx, case.calibration.feeds(0, 2))
    export_seconds = time.perf_counter() - started

    rows, runners = [], {}
    for method in METHODS:
        if method.models is not None and case.key not in method.models:
            continue
        print(f"-- {case.key}: {method.label}", flush=True)
        row = {"label": method.label, "tool": method.tool, "call": method.call, "status": "ok", "reason": None,
               "precision": None, "metrics": {}, "drop": None, "uncertainty": None, "within_budget": None,
               "latency": None, "size_bytes": None, "build_seconds": None, "detail": "", "edgeml": None}
        rows.append(row)
        folder = work / re.sub(r"[^a-z0-9]+", "-", method.label.lower()).strip("-")
        folder.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(build_threads)
        try:
            built = method.build(Context(case, folder, args.threads, onnx, export_seconds, reference_calibration))
            outputs = predict(built.runner, case.evaluation, BATCH)
        except Exception as e:  # noqa: BLE001  (a tool that fails on a model is a result, not the end of the run)
            where = traceback.extract_tb(e.__traceback__)[-1]
            row["status"], row["reason"] = "failed", (f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]} "
                                                      f"(in {Path(where.filename).name}, {where.name})")
            print(f"   failed: {row['reason']}", flush=True)
            continue
        metrics = compare(outputs, reference, case.evaluation.labels)
        drop = reference_quality - metrics[case.metric]
        row.update(precision=built.precision, metrics=metrics, drop=drop, within_budget=drop <= case.max_drop + 1e-12,
                   uncertainty=drop_uncertainty(outputs, reference, case.evaluation.labels, case.metric, SEED),
                   size_bytes=built.size_bytes, build_seconds=built.build_seconds, detail=built.detail,
                   edgeml=None if built.run is None else edgeml_summary(built.run))
        runners[method.label] = built.runner
        low, high = row["uncertainty"]["ci95"]
        print(f"   {case.metric} {metrics[case.metric]:.4f}, drop {drop:.4f} (95% CI {low:.4f} to {high:.4f}), "
              f"built in {row['build_seconds']:.1f} s", flush=True)

    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    sample = case.evaluation.feeds(0, 1)
    runs = interleave({label: functools.partial(r.run, sample) for label, r in runners.items()}, args.rounds,
                      MeasureConfig(seconds=args.measure_seconds),
                      on_round=lambda r, label, ms: print(f"   round {r + 1}: {label}: p50 {np.median(ms):.3f} ms "
                                                          f"({len(ms)} runs)", flush=True))
    for row in rows:
        if row["label"] in runs:
            row["latency"] = summarize(runs[row["label"]])
    return {"key": case.key, "title": case.title, "data": case.data, "budget": case.budget, "metric": case.metric,
            "max_drop": case.max_drop, "reference_quality": reference_quality, "onnx": str(onnx),
            "samples": len(case.evaluation), "confidence": confidence, "stress": case.stress,
            "export_seconds": export_seconds, "load_average": load, "rows": rows}


MARGIN = 0.05       # a top-1 margin (top-1 minus top-2 probability) under this is a near tie


def top1_confidence(logits: np.ndarray) -> dict | None:
    """How sure a classifier is of its top-1 class: the median top-1 softmax probability, and the share of
    samples whose top-1 margin is under MARGIN. None for outputs that are not (samples, classes)."""
    if logits.ndim != 2 or logits.shape[1] < 2:
        return None
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    top2 = np.sort(p, axis=1)[:, -2:]
    return {"median_top1": float(np.median(top2[:, 1])), "margin": MARGIN,
            "margin_under": float(np.mean(top2[:, 1] - top2[:, 0] < MARGIN))}


def edgeml_summary(run: Run) -> dict:
    """What the report and the reasons need from an edgeml run record."""
    return {
        "output": run.output, "quality_metric": run.data["quality_metric"], "selection": run.selection,
        "rows": [{"name": r.name, "role": r.role, "status": r.status, "precision": r.precision,
                  "metrics": r.metrics, "quality_drop": r.quality_drop, "within_budget": r.within_budget,
                  "selected": r.selected,
                  "p50_ms": None if r.latency is None else r.latency["p50_ms"], "build_seconds": r.build_seconds,
                  "reason": r.reason} for r in run.rows],
        "tuning": {name: {"met": t["met"], "stopped": t["stopped"], "seconds": t["seconds"],
                          "trials": len(t["trials"]), "kept_in_float": t["best"]["excluded"]}
                   if "best" in t else {"reason": t["reason"]} for name, t in run.tuning.items()},
        "steps": run.steps, "warnings": run.warnings,
    }


if __name__ == "__main__":
    main()
