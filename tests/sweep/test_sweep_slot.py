"""The timing turn of edgeml.measure.timing_slot: off by default; with a guard installed, every latency
measurement holds it, and a measurement inside another holds the turn it is in rather than asking again.
(On Ray, test_sweep_local checks that the measurements of cells running side by side never overlap.)"""

from __future__ import annotations

import threading
from contextlib import contextmanager

from edgeml.measure import timing_slot
from edgeml.measure.latency import MeasureConfig, measure_latency
from edgeml.measure.paired_timing import interleave

QUICK = MeasureConfig(seconds=0.001, min_runs=2, warmup_seconds=0.0, min_warmup_runs=1)


def _guard(turns: list):
    """A timing turn that counts how often it is taken and fails when asked for while held."""
    lock = threading.Lock()

    @contextmanager
    def guard():
        assert lock.acquire(timeout=1), "asked for the turn it already holds"
        turns.append(1)
        try:
            yield
        finally:
            lock.release()
    return guard


def test_measurements_hold_the_turn_once_each():
    turns = []
    measure_latency(lambda: None, QUICK)
    assert turns == []                                   # no guard: nothing to wait for
    with timing_slot.guarded_by(_guard(turns)):
        measure_latency(lambda: None, QUICK)
        interleave({"a": lambda: None, "b": lambda: None}, 2, QUICK)
        with timing_slot.held():
            measure_latency(lambda: None, QUICK)
    assert len(turns) == 1 + 4 + 1
    measure_latency(lambda: None, QUICK)
    assert len(turns) == 6                               # the guard is gone with its block


def test_language_model_timing_and_contests_hold_the_turn_once_each(tiny_lm):
    """Decode speed, the bandwidth floor and a contest's alternating rounds each hold the turn once (the timed
    calls inside a contest hold the turn it is in)."""
    from edgeml.measure import decode_speed
    from edgeml.measure.paired_timing import contest
    from edgeml.runtimes.generation import GENERATION_RUNTIMES

    generator = GENERATION_RUNTIMES["transformers"].open(tiny_lm, 1)
    turns = []
    with timing_slot.guarded_by(_guard(turns)):
        decode_speed.measure_speed(generator, {4: [[1, 2, 3, 4]] * 3}, new_tokens=4, runs=2)
        decode_speed.bandwidth(2, megabytes=1, runs=1)
        contest({"a": lambda: None, "b": lambda: None}, 0.01, min_rounds=2, max_rounds=2)
    assert len(turns) == 3
