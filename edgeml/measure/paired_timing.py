"""Interleaved latency rounds: every method of a model is timed once per round, so that other work on
a shared machine slows all of them alike, and each method's p50 is the median of its round p50s.

The 95% confidence interval of that median is a two-level bootstrap: the rounds are resampled (the
load of a shared machine changes between rounds more than within one), then the calls of each round,
each round's p50 recomputed and the median of those taken, `RESAMPLES` times. Every method draws the
same rounds in the same resample, so the interval of a ratio between two methods keeps them paired
by round.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import numpy as np

from edgeml.measure.latency import MeasureConfig, measure_latency

RESAMPLES = 1000
CHUNK = 100              # resamples drawn at once


def timed_runs(run_once: Callable[[], object], config: MeasureConfig) -> np.ndarray:
    """Milliseconds of each timed call of `run_once`, measured by `edgeml.measure.latency.measure_latency`
    (its warm-up calls dropped)."""
    times: list[float] = []

    def once() -> None:
        start = time.perf_counter()
        run_once()
        times.append(time.perf_counter() - start)

    gc.collect()     # so that collecting earlier garbage does not land in the timed calls
    latency = measure_latency(once, config)
    return np.asarray(times[latency.warmup_runs:]) * 1e3


def interleave(methods: dict[str, Callable[[], object]], rounds: int, config: MeasureConfig,
               on_round: Callable[[int, str, np.ndarray], None] | None = None) -> dict[str, list[np.ndarray]]:
    """The timed runs of every method, one list per round; round r starts at the r-th method, so no
    method is always timed first or last."""
    names = list(methods)
    runs: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            runs[name].append(timed_runs(methods[name], config))
            if on_round is not None:
                on_round(r, name, runs[name][-1])
    return runs


def bootstrap_p50(rounds: list[np.ndarray], seed: int = 0) -> np.ndarray:
    """RESAMPLES draws of the median of the rounds' p50s: rounds resampled (the same picks for every
    method), then each round's calls."""
    picks = np.random.default_rng(seed).integers(0, len(rounds), (RESAMPLES, len(rounds)))
    rng = np.random.default_rng(seed + 1)
    p50s = np.empty((RESAMPLES, len(rounds)))           # [i, j]: round j's p50 in resample i
    for j, runs in enumerate(rounds):
        for start in range(0, RESAMPLES, CHUNK):
            index = rng.integers(0, len(runs), (min(CHUNK, RESAMPLES - start), len(runs)))
            p50s[start:start + len(index), j] = np.median(runs[index], axis=1)
    return np.median(np.take_along_axis(p50s, picks, axis=1), axis=1)


def summarize(rounds: list[np.ndarray]) -> dict:
    """p50 (median of the round p50s) with its bootstrap 95% CI, p90 (median of the round p90s), the
    round p50s and run counts; `draws` keeps the bootstrap draws for ratios."""
    draws = bootstrap_p50(rounds)
    return {"p50_ms": float(np.median([np.median(r) for r in rounds])),
            "p50_ci95_ms": [float(x) for x in np.percentile(draws, [2.5, 97.5])],
            "p90_ms": float(np.median([np.percentile(r, 90) for r in rounds])),
            "round_p50_ms": [float(np.median(r)) for r in rounds],
            "runs": [len(r) for r in rounds], "draws": draws}


def round_speedup(baseline: dict, candidate: dict, seed: int = 0) -> dict:
    """`baseline` p50 / `candidate` p50 from each round's own ratio (a round times the two back to back, so a
    change of the machine's load between rounds cancels out): the median ratio, and a 95% CI from RESAMPLES
    draws of the rounds (each round's ratio kept whole)."""
    ratios = np.asarray(baseline["round_p50_ms"]) / np.asarray(candidate["round_p50_ms"])
    picks = np.random.default_rng(seed).integers(0, len(ratios), (RESAMPLES, len(ratios)))
    draws = np.median(ratios[picks], axis=1)
    return {"ratio": float(np.median(ratios)), "ci95": [float(x) for x in np.percentile(draws, [2.5, 97.5])],
            "rounds": ratios.tolist()}


def speedup(baseline: dict, candidate: dict) -> dict:
    """`baseline` p50 / `candidate` p50 (above 1: the candidate is faster), with a 95% CI from the two
    methods' bootstrap draws and the ratio in each round."""
    draws = baseline["draws"] / candidate["draws"]
    return {"ratio": baseline["p50_ms"] / candidate["p50_ms"],
            "ci95": [float(x) for x in np.percentile(draws, [2.5, 97.5])],
            "rounds": [a / b for a, b in zip(baseline["round_p50_ms"], candidate["round_p50_ms"])]}
