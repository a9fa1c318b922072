"""How fast a language-model build generates here, at batch 1: time to first token for prompts of given lengths,
and decode tokens/s over a fixed number of new tokens (greedy, never stopping early), after a warm-up, as the
median of several runs with a bootstrap 95% CI.

Decode is memory-bound: every new token reads all the weights once. So it cannot beat (memory bandwidth) / (bytes
of weights), the floor the report states each build's tokens/s against; `bandwidth()` measures the bandwidth here
as a large array copy (bytes read + written per second).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from edgeml.runtimes.generation import Generator


def first_token_seconds(generator: Generator, ids: Sequence[int]) -> float:
    """Seconds from the call until the first new token (the prefill of `ids` and one decode step)."""
    start = time.perf_counter()
    stream = generator.stream(ids, 1)
    next(stream)
    seconds = time.perf_counter() - start
    stream.close()
    return seconds


def decode_rate(generator: Generator, ids: Sequence[int], new_tokens: int) -> float:
    """Tokens per second after the first, over `new_tokens` new tokens."""
    times = []
    for _ in generator.stream(ids, new_tokens):
        times.append(time.perf_counter())
    if len(times) < 2:
        return float("nan")
    return (len(times) - 1) / (times[-1] - times[0])


def measure_speed(generator: Generator, prompts: dict[int, list[int]], new_tokens: int, runs: int) -> dict:
    """Time to first token (ms) for each prompt length, and decode tokens/s after the shortest prompt: one
    warm-up, then `runs` runs each."""
    shortest = prompts[min(prompts)]
    decode_rate(generator, shortest, min(new_tokens, 8))                # warm-up
    out: dict = {"ttft_ms": {}, "runs": runs, "new_tokens": new_tokens}
    for length, ids in sorted(prompts.items()):
        first_token_seconds(generator, ids)
        ms = [1000 * first_token_seconds(generator, ids) for _ in range(runs)]
        out["ttft_ms"][str(length)] = _summary(ms)
    out["decode_tokens_per_s"] = _summary([decode_rate(generator, shortest, new_tokens) for _ in range(runs)])
    return out


def _summary(values: list[float]) -> dict:
    values_ = np.asarray(values, dtype=float)
    rng = np.random.default_rng(0)
    medians = np.median(values_[rng.integers(0, len(values_), (1000, len(values_)))], axis=1)
    return {"median": float(np.median(values_)), "ci95": [float(np.percentile(medians, 2.5)),
                                                         float(np.percentile(medians, 97.5))],
            "values": [float(v) for v in values_]}


def bandwidth(megabytes: int = 256, runs: int = 5) -> float:
    """Bytes per second of a copy of `megabytes` (read + written), best of `runs`: this machine's memory
    bandwidth as one core streams it."""
    source = np.ones(megabytes * 2**20 // 8)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
    return 2 * source.nbytes / best
