"""Latency, memory and machine facts, measured the same way for every row of a report.

Latency: warm-up first, then timed single runs until both a minimum count and a minimum time
are reached; percentiles of those runs, and a bootstrap 95% confidence interval on the median.
The minimum counts hold within `MeasureConfig.longest` times the minimum time: a model whose one call takes
0.6 s is timed about 9 calls (5 s), not 50 (30 s), and warms up with 2 calls, not 5.
Memory: the rise of the process's peak resident set (VmHWM) while loading and running the
model, after resetting the peak (Linux only; elsewhere it is reported as not measured).
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
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


_STATUS = Path("/proc/self/status")


def reset_peak_memory() -> int | None:
    """Reset the process's peak RSS; return the current RSS in bytes (None if unsupported)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_bytes("VmRSS")
    except OSError:
        return None


def peak_memory() -> int | None:
    try:
        return _status_bytes("VmHWM")
    except OSError:
        return None


def _status_bytes(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"{field} not in {_STATUS}")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads: int) -> dict:
    return {
        "cpu": cpu_model(),
        "architecture": platform.machine(),
        "logical_cores": os.cpu_count(),
        "threads": threads,
        "os": platform.platform(),
        "python": platform.python_version(),
    }
