"""Time bundles where they were shipped, with each bundle's own run.py: numpy and its runtime, no edgeml.

`edgeml rollout` runs this file's text with the device's Python, as
`python -c SOURCE ROUNDS SECONDS WARMUP_SECONDS MIN_WARMUP_RUNS MIN_RUNS MAX_RUNS THREADS FOLDER [FOLDER ...]`
(the settings of edgeml.measure.latency.MeasureConfig, which the device cannot import; THREADS 0: the
runtime's default), and reads the one JSON line it prints. Each FOLDER's run.py is loaded under a module
name of its own. A model's bundle runs the first sample of its reference.npz, batch 1, and a run counts its
wall time; a language model's bundle generates greedily after the reference.json prompt whose recorded
answer is longest, and a run counts its decode time per token (after the first token, so not the prompt).
After one warm-up each, the bundles are timed in ROUNDS alternating rounds in this one process (round r
starts at the r-th bundle, so none is always first), each round one untimed run and then timed runs until
both MIN_RUNS and SECONDS are reached (edgeml.measure.latency's loop, as is the warm-up). A bundle after the
first that cannot be opened or run is left out of the rounds, with its error in the output.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

clock = time.perf_counter


def load(folder: Path, index: int, threads: int | None):
    """(once, what it times): `once` runs the bundle in `folder` once, through its run.py, and returns the ms it
    counts (None: its wall time)."""
    spec = importlib.util.spec_from_file_location(f"edgeml_bundle_run_{index}", folder / "run.py")
    run = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = run
    spec.loader.exec_module(run)
    manifest = json.loads((run.HERE / "manifest.json").read_text())
    if manifest.get("kind") == "language-model":
        return generation(run, manifest, threads)
    infer = run.open_model(manifest, threads)
    with np.load(run.HERE / manifest["reference"]["file"]) as data:
        feeds = {k.split("/", 1)[1]: data[k][:1] for k in data.files if k.startswith("input/")}

    def once() -> None:
        infer(feeds)

    return once, "reference.npz, first sample, batch 1: ms per run"


def generation(run, manifest: dict, threads: int | None):
    """(once, what it times) of a language model's bundle: `once` generates greedily, up to the reference's
    max_new_tokens, after the prompt whose recorded answer is longest, and returns the decode ms per token."""
    reference = json.loads((run.HERE / "reference.json").read_text())
    answers = reference["output_ids"]
    longest = max(range(len(answers)), key=lambda i: len(answers[i]))
    if len(answers[longest]) < 2:
        raise ValueError(f"{run.HERE}: the longest reference answer has {len(answers[longest])} token(s); the "
                         "decode time per token needs at least 2")
    model = run.RUNTIMES[manifest["runtime"]](run.HERE / manifest["model"], threads or 0)
    ids, new_tokens = reference["prompt_ids"][longest], reference["max_new_tokens"]

    def once() -> float:
        stamps = [clock() for _ in model.generate(ids, new_tokens)]
        return (stamps[-1] - stamps[0]) / (len(stamps) - 1) * 1e3

    return once, (f"reference.json prompt {longest + 1} ({len(ids)} tokens), its answer of {len(answers[longest])} "
                  "tokens generated again: decode ms per token after the first")


def warm_up(once, seconds: float, min_runs: int) -> int:
    runs, start = 0, clock()
    while runs < min_runs or clock() - start < seconds:
        once()
        runs += 1
    return runs


def timed(once, seconds: float, min_runs: int, max_runs: int) -> np.ndarray:
    times, start = [], clock()
    while len(times) < max_runs and (len(times) < min_runs or clock() - start < seconds):
        t0 = clock()
        ms = once()
        times.append((clock() - t0) * 1e3 if ms is None else ms)
    return np.asarray(times)


def main(argv: list[str]) -> int:
    rounds, seconds, warmup_seconds = int(argv[0]), float(argv[1]), float(argv[2])
    min_warmup_runs, min_runs, max_runs, threads = (int(a) for a in argv[3:7])
    results, runners = [], []
    for i, folder in enumerate(argv[7:]):
        result = {"folder": folder}
        try:
            once, result["input"] = load(Path(folder), i, threads or None)
            result["warmup_runs"] = warm_up(once, warmup_seconds, min_warmup_runs)
            runners.append((once, result))
        except Exception as e:
            if i == 0:
                raise
            result["error"] = f"{type(e).__name__}: {e}".splitlines()[0]
        results.append(result)
    for r in range(rounds):
        for once, result in runners[r % len(runners):] + runners[:r % len(runners)]:
            once()                                 # its caches back after the other bundles ran
            ms = timed(once, seconds, min_runs, max_runs)
            result.setdefault("round_p50_ms", []).append(float(np.median(ms)))
            result.setdefault("round_p90_ms", []).append(float(np.percentile(ms, 90)))
            result.setdefault("runs", []).append(len(ms))
    print(json.dumps({"rounds": rounds, "threads": threads or None, "bundles": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
