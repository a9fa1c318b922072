"""Time a bundle where it was shipped, with the bundle's own run.py: numpy and its runtime, no edgeml.

`edgeml rollout` runs this file's text with the device's Python in the bundle's folder, as
`python -c SOURCE SECONDS WARMUP_SECONDS MIN_WARMUP_RUNS MIN_RUNS MAX_RUNS [THREADS]` (the settings of
edgeml.measure.latency.MeasureConfig, which the device cannot import), and reads the one JSON line it prints.
Like `edgeml profile` it runs the first sample of reference.npz, batch 1, warm-up first, then timed single
runs until both a minimum count and SECONDS are reached (edgeml.measure.latency's loop).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import run  # the bundle's run.py, in the working folder


def main(argv: list[str]) -> int:
    seconds, warmup_seconds = float(argv[0]), float(argv[1])
    min_warmup_runs, min_runs, max_runs = (int(a) for a in argv[2:5])
    threads = int(argv[5]) if len(argv) > 5 else None
    manifest = json.loads((run.HERE / "manifest.json").read_text())
    infer = run.open_model(manifest, threads)
    with np.load(run.HERE / manifest["reference"]["file"]) as data:
        feeds = {k.split("/", 1)[1]: data[k][:1] for k in data.files if k.startswith("input/")}
    clock = time.perf_counter
    warmup, start = 0, clock()
    while warmup < min_warmup_runs or clock() - start < warmup_seconds:
        infer(feeds)
        warmup += 1
    times, start = [], clock()
    while len(times) < max_runs and (len(times) < min_runs or clock() - start < seconds):
        t0 = clock()
        infer(feeds)
        times.append(clock() - t0)
    p50, p90, p99 = np.percentile(np.asarray(times) * 1e3, [50, 90, 99])
    print(json.dumps({"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "runs": len(times),
                      "warmup_runs": warmup, "threads": threads, "input": "reference.npz, first sample"}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
