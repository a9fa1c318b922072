"""How fast a language-model build generates here, at batch 1: time to first token for prompts of given lengths,
and decode tokens/s over a fixed number of new tokens (greedy, never stopping early), after a warm-up, as the
median of several runs with a bootstrap 95% CI.

Decode is memory-bound: every new token reads all the weights once. So it cannot beat (memory bandwidth) / (bytes
of weights), the floor the report states each build's tokens/s against; `bandwidth()` measures the bandwidth here
as a large array copy by as many threads (bytes read + written per second). A model whose weights partly fit in the
CPU's caches can pass that floor: its share is then above 100 %.

Both hold the machine's timing turn (edgeml.measure.timing_slot) while they run, as every latency measurement does:
cells of a sweep on one node never time at once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from edgeml.measure import timing_slot
from edgeml.measure.latency import bootstrap_median_ci
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


def measure_speed(generator: Generator, prompts: dict[int, list[list[int]]], new_tokens: int, runs: int) -> dict:
    """Time to first token (ms) for each prompt length, and decode tokens/s after the shortest prompts: a warm-up,
    then `runs` runs each. `prompts` gives `runs + 1` different prompts of each length, one a run, so that a
    runtime that keeps a prompt's cache for the next request (prefix caching) is timed on new prompts."""
    shortest = prompts[min(prompts)]
    ttft: dict[str, list[float]] = {}
    with timing_slot.held():
        decode_rate(generator, shortest[0], min(new_tokens, 8))                # warm-up
        for length, texts in sorted(prompts.items()):
            first_token_seconds(generator, texts[0])
            ttft[str(length)] = [1000 * first_token_seconds(generator, ids) for ids in texts[1:runs + 1]]
        rates = [decode_rate(generator, ids, new_tokens) for ids in shortest[1:runs + 1]]
    return {"ttft_ms": {length: summary(ms) for length, ms in ttft.items()}, "runs": runs, "new_tokens": new_tokens,
            "decode_tokens_per_s": summary(rates)}


def distinct_prompts(tokens: list[int], length: int, count: int) -> list[list[int]]:
    """`count` prompts of `length` tokens from `tokens`, none the prefix of another: consecutive slices where the
    tokens suffice, else slices that start one token apart."""
    step = length if len(tokens) >= length * count else 1
    return [tokens[i * step:i * step + length] for i in range(count)]


def summary(values: list[float]) -> dict:
    """The median of `values` with its bootstrap 95% CI, and the values."""
    return {"median": float(np.median(values)), "ci95": list(bootstrap_median_ci(np.asarray(values))),
            "values": [float(v) for v in values]}


def bandwidth(threads: int, megabytes: int = 256, runs: int = 5) -> float:
    """Bytes per second of a copy of `megabytes` (read + written) by `threads` threads, each copying its share
    (numpy releases the GIL while it copies), best of `runs`: the memory bandwidth a runtime with as many threads
    can stream."""
    from concurrent.futures import ThreadPoolExecutor

    source = np.ones(megabytes * 2**20 // 8)
    target = np.empty_like(source)
    parts = np.array_split(np.arange(len(source)), threads)
    bounds = [(int(p[0]), int(p[-1]) + 1) for p in parts if len(p)]
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool, timing_slot.held():
        for _ in range(runs):
            start = time.perf_counter()
            list(pool.map(lambda b: np.copyto(target[b[0]:b[1]], source[b[0]:b[1]]), bounds))
            best = min(best, time.perf_counter() - start)
    return 2 * source.nbytes / best
