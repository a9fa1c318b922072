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


def test_measurements_hold_the_turn_once_each():
    lock = threading.Lock()
    turns = []

    @contextmanager
    def guard():
        assert lock.acquire(timeout=1), "asked for the turn it already holds"
        turns.append(1)
        try:
            yield
        finally:
            lock.release()

    measure_latency(lambda: None, QUICK)
    assert turns == []                                   # no guard: nothing to wait for
    with timing_slot.guarded_by(guard):
        measure_latency(lambda: None, QUICK)
        interleave({"a": lambda: None, "b": lambda: None}, 2, QUICK)
        with timing_slot.held():
            measure_latency(lambda: None, QUICK)
    assert len(turns) == 1 + 4 + 1
    measure_latency(lambda: None, QUICK)
    assert len(turns) == 6                               # the guard is gone with its block
