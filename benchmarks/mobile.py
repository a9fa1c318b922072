"""The mobile target on this machine: LiteRT FP32, FP16 and INT8 for the digits example and for
EfficientNet-Lite0 (pretrained, ImageNet), each measured here with the LiteRT interpreter and
predicted for the phone profile.

    python -m benchmarks.mobile [--threads 1] [--measure-seconds 2]

Every number comes from `edgeml optimize --target mobile` (its run records are kept in
benchmarks/results/mobile-work/). EfficientNet-Lite0 is judged by top-1 agreement with PyTorch
FP32 on crops of scikit-image's photos that calibration never saw (see benchmarks/images.py).
The table is printed and written to benchmarks/results/mobile.md, the raw rows beside it.
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import edgeml
from benchmarks.images import CALIBRATION_PHOTOS, EVALUATION_PHOTOS, photo_crops
from benchmarks.models import lite0_weights
from edgeml.measure.machine import machine_info
from edgeml.runtimes.base import package_version

CALIBRATION_CROPS = 64
EVALUATION_CROPS = 240
PACKAGES = ("torch", "litert_torch", "ai_edge_litert", "ai_edge_quantizer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--measure-seconds", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    work = args.out / "mobile-work"
    work.mkdir(parents=True, exist_ok=True)
    common = dict(target="mobile", threads=args.threads, measure_seconds=args.measure_seconds, force=True)

    print("digits example", flush=True)
    digits = edgeml.optimize(example="digits", out=work / "digits", **common)
    print("EfficientNet-Lite0", flush=True)
    np.savez(work / "photos-calib.npz", inputs=photo_crops(CALIBRATION_PHOTOS, CALIBRATION_CROPS, seed=0))
    np.savez(work / "photos-eval.npz", inputs=photo_crops(EVALUATION_PHOTOS, EVALUATION_CROPS, seed=1))
    lite0 = edgeml.optimize("benchmarks.models:efficientnet_lite0", weights=lite0_weights(),
                            input_shapes=["inputs:1x3x224x224"], calib_data=work / "photos-calib.npz",
                            eval_data=work / "photos-eval.npz", out=work / "efficientnet-lite0", **common)
    write_results(args, {"digits CNN (test split, 360 images, accuracy)": digits,
                         f"EfficientNet-Lite0 ({EVALUATION_CROPS} held-out photo crops, top-1 agreement with "
                         "PyTorch FP32)": lite0})


def write_results(args, runs: dict) -> None:
    machine = machine_info(args.threads)
    lines = [
        "# Mobile target: LiteRT measured on this machine, predicted for a phone",
        "",
        f"Command: `python -m benchmarks.mobile --threads {args.threads} --measure-seconds {args.measure_seconds}`",
        f"Measured {datetime.now(timezone.utc).date()} on {machine['cpu']} ({machine['architecture']}, "
        f"{machine['logical_cores']} logical cores, {args.threads} thread(s) used), Python "
        f"{platform.python_version()}; " + ", ".join(f"{p} {package_version(p)}" for p in PACKAGES) + ".",
        "Host p50: the LiteRT interpreter (XNNPACK) on this CPU, batch 1, after warm-up, with its bootstrap 95% "
        "CI: **measured on host CPU**. Phone p50: the roofline for the `android-phone` profile: **predicted**, "
        "never measured.",
    ]
    raw = {}
    for title, run in runs.items():
        metric = run.data["quality_metric"]
        lines += ["", f"## {title}", "",
                  f"| candidate | precision | {metric} | drop | host p50 ms (95% CI), measured | phone p50 ms, "
                  "predicted | size MB | status |", "|---|---|---|---|---|---|---|---|"]
        for row in run.rows:
            lat, predicted = row.latency, (row.predicted or {}).get("ms")
            quality = row.metrics.get(metric)
            lines.append("| " + " | ".join([
                f"**{row.name}** (selected)" if row.selected else row.name, row.precision,
                "—" if quality is None else f"{quality * 100:.2f} %",
                "—" if row.role == "reference" or row.quality_drop is None else f"{row.quality_drop * 100:+.2f} pt",
                "—" if lat is None else
                f"{lat['p50_ms']:.3f} ({lat['p50_ci95_ms'][0]:.3f}–{lat['p50_ci95_ms'][1]:.3f})",
                "—" if predicted is None else f"{predicted:.3f}",
                "—" if row.size_bytes is None else f"{row.size_bytes / 1e6:.2f}",
                row.status if row.status != "ok" else ("reference (PyTorch eager)" if row.role == "reference"
                                                      else "measured"),
            ]) + " |")
        raw[title] = {"output": run.output, "quality_metric": metric, "rows": [
            {"name": r.name, "precision": r.precision, "metrics": r.metrics, "quality_drop": r.quality_drop,
             "latency": r.latency, "predicted": r.predicted, "size_bytes": r.size_bytes, "status": r.status}
            for r in run.rows]}
    table = "\n".join(lines) + "\n"
    (args.out / "mobile.md").write_text(table)
    (args.out / "mobile.json").write_text(json.dumps({"machine": machine, "runs": raw}, indent=2) + "\n")
    print(table)


if __name__ == "__main__":
    main()
