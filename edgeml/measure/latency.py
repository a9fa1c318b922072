"""Latency, measured the same way for every row of a report.

Warm-up first, then timed single runs until both a minimum count and a minimum time
are reached; percentiles of those runs, and a bootstrap 95% confidence interval on the median.
The minimum counts hold within `MeasureConfig.longest` times the minimum time: a model whose one call takes
0.6 s is timed about 9 calls (5 s), not 50 (30 s), and warms up with 2 calls, not 5.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from edgeml.measure import timing_slot


@dataclass(frozen=True)
class MeasureConfig:
    seconds: float = 1.0          # minimum timed duration per row
    min_runs: int = 50
    max_runs: int = 20000
    warmup_seconds: float = 0.2
    min_warmup_runs: int = 5
    bootstrap: int = 1000
    seed: int = 0
    longest: float = 5.0          # past this many times `seconds` (warm-up: max(warmup_seconds, seconds)) ...
    fewest_runs: int = 5          # ... this many timed runs are enough, whatever min_runs says


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    p50_ci95_ms: tuple[float, float]
    runs: int
    warmup_runs: int
    throughput_per_s: float       # sequential batch-1 inferences per second (1000 / mean)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["p50_ci95_ms"] = list(self.p50_ci95_ms)
        return d


def measure_latency(run_once: Callable[[], object], config: MeasureConfig = MeasureConfig()) -> Latency:
    warmup, ms = timed_calls(run_once, config)
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return Latency(float(p50), float(p90), float(p99), float(ms.mean()),
                   bootstrap_median_ci(ms, config.bootstrap, config.seed), len(ms), warmup,
                   float(1e3 / ms.mean()))


def timed_calls(run_once: Callable[[], object], config: MeasureConfig) -> tuple[int, np.ndarray]:
    """The warm-up calls' count and each timed call's milliseconds, as `config` says."""
    with timing_slot.held():           # one measurement at a time per machine when jobs share it (edgeml.sweep)
        return _calls(run_once, config)


def _calls(run_once: Callable[[], object], config: MeasureConfig) -> tuple[int, np.ndarray]:
    clock = time.perf_counter
    warmup = 0
    start = clock()
    while clock() - start < config.warmup_seconds or (
            warmup < config.min_warmup_runs and clock() - start < max(config.warmup_seconds, config.seconds)):
        run_once()
        warmup += 1
    times = []
    start = clock()
    while len(times) < config.max_runs and (clock() - start < config.seconds or len(times) < config.min_runs and (
            len(times) < config.fewest_runs or clock() - start < config.seconds * config.longest)):
        t0 = clock()
        run_once()
        times.append(clock() - t0)
    return warmup, np.asarray(times) * 1e3


def bootstrap_median_ci(samples: np.ndarray, resamples: int = 1000, seed: int = 0,
                        level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval for the median of `samples`."""
    rng = np.random.default_rng(seed)
    samples = np.asarray(samples)
    medians = np.empty(resamples)
    for i in range(resamples):  # a loop keeps memory flat for long runs
        medians[i] = np.median(samples[rng.integers(0, len(samples), len(samples))])
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(medians, [tail, 100 - tail])
    return float(lo), float(hi)
