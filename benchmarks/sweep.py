"""`edgeml sweep` on Ray against the same cells one after another: wall time and Ray's per-task overhead.

8 cells: 2 models (the digits CNN, and an MLP trained on digits here and given as ONNX) x 2 recipes (INT8
calibrated with min-max and with entropy) x 2 targets (cpu, measured; jetson-orin-nano, predicted). Sequential:
one process calling `edgeml.optimize` per cell, as a script would today. Ray: `edgeml sweep` on the local Ray it
starts, 2 cells at a time. Each run builds into a fresh cache, so neither reuses the other's builds.

Ray's per-task overhead is measured apart: `ray.init`, the first task of a fresh worker (process start and
`import edgeml`), and the round trip of an empty task on a warm worker. Writes benchmarks/results/sweep.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import yaml

RESULTS = Path(__file__).parent / "results"
RECIPES = {"minmax": {"calibration_method": "minmax"}, "entropy": {"calibration_method": "entropy"}}


def mlp_files(folder: Path) -> dict:
    """An MLP trained on the digits example's data (seeded, a few seconds), as ONNX with calibration and evaluation
    data: the sweep's second model."""
    import torch
    import torch.nn as nn

    from edgeml.examples import digits_example

    ex = digits_example()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                          nn.Linear(256, 10))
    x, y = torch.from_numpy(ex.train.inputs["input"]), torch.from_numpy(ex.train.labels).long()
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(30):
        for i in range(0, len(x), 64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64]).backward()
            optimizer.step()
    model.eval()
    torch.onnx.export(model, (x[:1],), str(folder / "mlp.onnx"), dynamo=False, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}})
    np.savez(folder / "calib.npz", input=ex.validation.inputs["input"], labels=ex.validation.labels)
    np.savez(folder / "eval.npz", input=ex.test.inputs["input"], labels=ex.test.labels)
    return {"model": "mlp.onnx", "calib_data": "calib.npz", "eval_data": "eval.npz"}


def sweep_file(folder: Path, threads: int, measure_seconds: float) -> Path:
    spec = {"models": {"digits": {"example": "digits"}, "mlp": mlp_files(folder)},
            "targets": ["cpu", {"target": "jetson", "profile": "jetson-orin-nano"}],
            "recipes": [{"name": name, **settings} for name, settings in RECIPES.items()],
            "settings": {"precision": "int8", "quantizer": "ort", "threads": threads,
                         "measure_seconds": measure_seconds}}
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def sequential(path: Path, out: Path, cache: Path) -> tuple[float, list[float]]:
    """Every cell with `edgeml.optimize`, one after another in this process: wall time, and each cell's time."""
    import edgeml
    from edgeml.sweep.spec import cell_recipe, load_sweep

    seconds = []
    start = time.perf_counter()
    for cell in load_sweep(path).cells:
        given = dict(cell.given)
        began = time.perf_counter()
        edgeml.optimize(given.pop("model", None), recipe=cell_recipe(cell), out=out / cell.id, cache_dir=cache,
                        **given)
        seconds.append(time.perf_counter() - began)
    return time.perf_counter() - start, seconds


def on_ray(path: Path, out: Path, workers: int) -> tuple[float, list[float]]:
    """`edgeml sweep` on the local Ray, `workers` cells at a time: wall time, and each cell's time in its task."""
    from edgeml.sweep.schedule import sweep

    start = time.perf_counter()
    record = sweep(path, out, max_parallel=workers)
    return time.perf_counter() - start, [c["seconds"] for c in record["cells"]]


def ray_overhead(runs: int = 50) -> dict:
    """ray.init, a fresh worker's first task (start + import edgeml), and an empty task's round trip when warm."""
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    init = time.perf_counter() - start

    @ray.remote
    def first() -> None:
        import edgeml.pipeline.optimize  # noqa: F401  (what a cell imports)

    @ray.remote
    def empty() -> None:
        return None

    start = time.perf_counter()
    ray.get(first.remote())
    cold = time.perf_counter() - start
    trips = []
    for _ in range(runs):
        began = time.perf_counter()
        ray.get(empty.remote())
        trips.append(time.perf_counter() - began)
    ray.shutdown()
    return {"ray_init_s": init, "cold_task_s": cold, "warm_task_ms": statistics.median(trips) * 1e3}


def render(result: dict) -> str:
    seq, par = result["sequential"], result["ray"]
    o = result["overhead"]
    lines = ["# `edgeml sweep`: sequential against local Ray", "",
             f"Command: `{result['command']}`",
             f"Measured {result['date']} on {result['machine']['cpu']} ({result['machine']['architecture']}, "
             f"{result['machine']['logical_cores']} logical cores), Python {result['machine']['python']}, "
             f"ray {result['ray_version']}.", "",
             f"{result['cells']} cells: 2 models (digits CNN, digits MLP as ONNX) x 2 INT8 recipes (min-max, entropy "
             "calibration) x 2 targets (cpu measured, jetson-orin-nano predicted); "
             f"{result['threads']} thread(s) per cell, measure_seconds {result['measure_seconds']}. "
             "Each run builds into a fresh cache. The machine's 1-minute load average before, between and after the "
             f"two runs: {', '.join(f'{x:.1f}' for x in result['load_average'])} (other work shares its cores).", "",
             "| run | wall s | sum of cell times s | mean cell s | speed-up |", "|---|---|---|---|---|",
             f"| sequential (`edgeml.optimize` per cell, one process) | {seq['wall_s']:.1f} | "
             f"{sum(seq['cells_s']):.1f} | {statistics.mean(seq['cells_s']):.1f} | 1.00x |",
             f"| local Ray, {result['workers']} cells at a time (`edgeml sweep --max-parallel {result['workers']}`) | "
             f"{par['wall_s']:.1f} | {sum(par['cells_s']):.1f} | {statistics.mean(par['cells_s']):.1f} | "
             f"{seq['wall_s'] / par['wall_s']:.2f}x |", "",
             "Ray's overhead, measured apart:", "",
             f"- `ray.init` (local, starting its processes): {o['ray_init_s']:.2f} s",
             f"- a fresh worker's first task (process start, `import edgeml`): {o['cold_task_s']:.2f} s",
             f"- an empty task's round trip on a warm worker: {o['warm_task_ms']:.2f} ms",
             f"- the sweep's own overhead per cell: (wall x {result['workers']} - sum of cell times) / cells = "
             f"{(par['wall_s'] * result['workers'] - sum(par['cells_s'])) / result['cells']:.2f} s", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--measure-seconds", type=float, default=0.5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    import ray

    import edgeml
    from edgeml.examples import digits_example
    from edgeml.measure.machine import machine_info
    from edgeml.sweep.spec import load_sweep

    digits_example()                       # trained (or restored) once, before either run is timed
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = sweep_file(folder, args.threads, args.measure_seconds)
        cells = len(load_sweep(path).cells)
        load = [os.getloadavg()[0]]
        seq = sequential(path, folder / "sequential", folder / "cache-sequential")
        load.append(os.getloadavg()[0])
        text = path.read_text().replace("settings:", f"cache_dir: {folder / 'cache-ray'}\nsettings:")
        path.write_text(text)
        par = on_ray(path, folder / "ray", args.workers)
        load.append(os.getloadavg()[0])
        overhead = ray_overhead()
    result = {"command": "python -m benchmarks.sweep " + " ".join(sys.argv[1:]),
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "machine": machine_info(args.threads),
              "edgeml": edgeml.__version__, "ray_version": ray.__version__, "cells": cells, "threads": args.threads,
              "measure_seconds": args.measure_seconds, "workers": args.workers,
              "sequential": {"wall_s": seq[0], "cells_s": seq[1]}, "ray": {"wall_s": par[0], "cells_s": par[1]},
              "overhead": overhead, "load_average": load}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sweep.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "sweep.md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
