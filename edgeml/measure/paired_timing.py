"""Interleaved latency rounds: every method of a model is timed once per round, so that other work on
a shared machine slows all of them alike, and each method's p50 is the median of its round p50s.

The 95% confidence interval of that median is a two-level bootstrap: the rounds are resampled (the
load of a shared machine changes between rounds more than within one), then the calls of each round,
each round's p50 recomputed and the median of those taken, `RESAMPLES` times. Every method draws the
same rounds in the same resample, so the interval of a ratio between two methods keeps them paired
by round.

Every decision edgeml takes on speed reads the same rule (`faster`): one method counts as faster than another when
the lower end of its speed-up's 95% CI is above `FASTER`, or when its median speed-up is above `CLEARLY_FASTER`
(rounds too noisy to prove a 10% gain must not hand a pick to the slower one). A `contest` times its methods in
rounds until every verdict is settled (`settled`: the CI lies wholly on one side of `FASTER`), at least
`MIN_ROUNDS` and at most `MAX_ROUNDS`, and within the seconds it is given: a round's run count follows from those
seconds and the model's own latency, so a model whose one call takes 0.6 s is timed a few calls a round, not 20.
A contest holds the machine's timing turn (edgeml.measure.timing_slot) for all its rounds: another job sharing the
machine (a sweep's other cells) never times between two of them.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np

from edgeml.measure import timing_slot
from edgeml.measure.latency import MeasureConfig, timed_calls

RESAMPLES = 1000
CHUNK = 100              # resamples drawn at once
# A speed-up counts when its 95% CI's lower end is above this: 1.0 would let noise flip one verdict in
# twenty between two equal methods, and a gain under 2% is not worth a less precise model.
FASTER = 1.02
CLEARLY_FASTER = 1.05    # a median speed-up above this counts even when the CI is too wide to clear FASTER
CLOSE = 2.0              # rows within this factor of the fastest p50 are timed again, in a contest: one
                         # measurement on a shared machine can be off by half (a small CNN: 0.016 and 0.026 ms)
MOST_CONTENDERS = 4      # at most this many of them (the fastest)
MIN_ROUNDS = 5           # a contest's fewest rounds: with fewer, a bootstrap over rounds is a coin toss
MAX_ROUNDS = 9


def timed_runs(run_once: Callable[[], object], config: MeasureConfig) -> np.ndarray:
    """Milliseconds of each timed call of `run_once`, as `edgeml.measure.latency.measure_latency` times them
    (its warm-up calls dropped)."""
    return timed_calls(run_once, config)[1]


def interleave(methods: dict[str, Callable[[], object]], rounds: int, config: MeasureConfig,
               on_round: Callable[[int, str, np.ndarray], None] | None = None, *,
               later: MeasureConfig | None = None,
               done: Callable[[dict[str, list[np.ndarray]]], bool] | None = None) -> dict[str, list[np.ndarray]]:
    """The timed runs of every method, one list per round; round r starts at the r-th method, so no
    method is always timed first or last. Rounds after the first are timed with `later` when given (the
    methods are warm by then); `done(runs)`, asked after each round, ends the rounds early."""
    names = list(methods)
    runs: dict[str, list[np.ndarray]] = {name: [] for name in names}
    with _no_collection():
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                runs[name].append(timed_runs(methods[name], config if r == 0 or later is None else later))
                if on_round is not None:
                    on_round(r, name, runs[name][-1])
            if done is not None and done(runs):
                break
    return runs


@contextmanager
def _no_collection():
    """Garbage collected once before the rounds and not during them, so that no collection lands in a timed call
    (a full collection takes 0.2 s with torch loaded: once per method and round, it outlasted a small model's
    rounds)."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def contest(methods: dict[str, Callable[[], object]], seconds: float,
            on_round: Callable[[int, str, np.ndarray], None] | None = None, *, min_rounds: int = MIN_ROUNDS,
            max_rounds: int = MAX_ROUNDS) -> dict[str, dict]:
    """`methods` timed together in alternating rounds, each `summarize`d. Each method gets `seconds` / (max_rounds x
    methods) a round, and at least one call (the first round warms each method up first; later rounds need not).
    The rounds stop once `min_rounds` are done and every method's verdict against the fastest is `settled`, or when
    another round would not fit in `seconds` (the time the last round took). Only `min_rounds` of one call per
    method can take longer than `seconds`."""
    share = seconds / (max_rounds * len(methods))
    first = MeasureConfig(seconds=share, min_runs=1, warmup_seconds=min(0.2, share), min_warmup_runs=1)
    later = MeasureConfig(seconds=share, min_runs=1, warmup_seconds=0.0, min_warmup_runs=0)
    started = 0.0                # when the rounds start: once the turn is held (waiting for it takes none of `seconds`)
    ends: list[float] = []

    def done(runs: dict[str, list[np.ndarray]]) -> bool:
        ends.append(time.perf_counter())
        count = len(ends)
        if count < min_rounds:
            return False
        last = ends[-1] - (ends[-2] if count > 1 else started)
        if ends[-1] - started + last > seconds:
            return True
        rounds = {name: {"round_p50_ms": [float(np.median(r)) for r in timed]} for name, timed in runs.items()}
        return all(settled(s) for s in versus_fastest(rounds)[1].values())

    with timing_slot.held():
        started = time.perf_counter()
        runs = interleave(methods, max_rounds, first, on_round, later=later, done=done)
    return {name: summarize(timed) for name, timed in runs.items()}


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


def versus_fastest(timed: dict[str, dict]) -> tuple[str, dict[str, dict]]:
    """The fastest of `timed` (records with "round_p50_ms", as `summarize` gives), by the median of its round p50s,
    and the fastest's `round_speedup` over each of the others, by name."""
    fastest = min(timed, key=lambda name: np.median(timed[name]["round_p50_ms"]))
    return fastest, {name: round_speedup(timed[name], timed[fastest]) for name in timed if name != fastest}


def faster(s: dict) -> str | None:
    """Which rule makes the speed-up `s` (`round_speedup`) count as faster: "ci" (its 95% CI's lower end is above
    FASTER), "median" (its median is above CLEARLY_FASTER, however wide the CI), or None (it does not count)."""
    if s["ci95"][0] > FASTER:
        return "ci"
    return "median" if s["ratio"] > CLEARLY_FASTER else None


def settled(s: dict) -> bool:
    """Whether more rounds would hardly change the verdict on the speed-up `s`: its CI lies wholly on one side of
    FASTER."""
    return s["ci95"][0] > FASTER or s["ci95"][1] <= FASTER


def verdict_text(s: dict) -> str:
    """'1.31x, 95% CI 1.25–1.40, 5 rounds', with the rule that made it count as faster, if one did."""
    rule = faster(s)
    why = {"ci": f"; its CI is above {FASTER:.2f}x", "median": f"; its median is above {CLEARLY_FASTER:.2f}x"}
    return (f"{s['ratio']:.2f}x, 95% CI {s['ci95'][0]:.2f}–{s['ci95'][1]:.2f}, {len(s['rounds'])} rounds"
            + why.get(rule, ""))


def speedup(baseline: dict, candidate: dict) -> dict:
    """`baseline` p50 / `candidate` p50 (above 1: the candidate is faster), with a 95% CI from the two
    methods' bootstrap draws and the ratio in each round."""
    draws = baseline["draws"] / candidate["draws"]
    return {"ratio": baseline["p50_ms"] / candidate["p50_ms"],
            "ci95": [float(x) for x in np.percentile(draws, [2.5, 97.5])],
            "rounds": [a / b for a, b in zip(baseline["round_p50_ms"], candidate["round_p50_ms"])]}
