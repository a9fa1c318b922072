"""The accuracy-budget search on a model whose cost is known exactly: each layer adds its own error
when quantized, and each layer kept in float adds a fixed latency."""

from edgeml.compress.quantize.accuracy import Trial, search

ERRORS = {f"layer{i}": 0.001 * (i % 5) + (0.05 if i in (3, 11, 17) else 0.0) for i in range(24)}
LAYERS = [(name, "MatMul") for name in ERRORS]


def evaluate(excluded, purpose):
    drop = sum(e for name, e in ERRORS.items() if name not in excluded)
    return Trial(tuple(excluded), 1.0 - drop, drop, 1.0 + 0.1 * len(excluded), 1000, purpose)


def test_bisection_keeps_the_fewest_layers_that_meet_the_budget():
    result = search(LAYERS, evaluate, 0.031, 60, local_errors=lambda: ERRORS)
    assert result.met and result.stopped == "budget met"
    assert {"layer3", "layer11", "layer17"} <= set(result.best.excluded)
    kept = len(result.best.excluded)
    shorter = evaluate(sorted(ERRORS, key=ERRORS.get, reverse=True)[:kept - 1], "")
    assert shorter.drop > 0.031                      # one layer fewer in float misses the budget


def test_search_stops_once_it_cannot_beat_a_faster_candidate_within_budget():
    alone = search(LAYERS, evaluate, 0.031, 60, local_errors=lambda: ERRORS)
    beaten = search(LAYERS, evaluate, 0.031, 60, local_errors=lambda: ERRORS, beat=("other", 1.15))
    assert beaten.stopped.startswith("slower than other") and beaten.best.p50_ms >= 1.15
    assert len(beaten.trials) < len(alone.trials)
    bisection = [t for t in beaten.trials if "largest local error" in t.purpose]
    assert [t.p50_ms < 1.15 for t in bisection] == [True, False]    # it stopped at the first one too slow


def test_a_faster_candidate_does_not_stop_a_search_that_can_still_win():
    result = search(LAYERS, evaluate, 0.031, 60, local_errors=lambda: ERRORS, beat=("other", 5.0))
    assert result.met and result.best.p50_ms < 5.0


def test_search_stops_when_even_every_layer_in_float_misses_the_budget():
    result = search(LAYERS, lambda excluded, purpose: evaluate((), purpose), 0.031, 60,
                    local_errors=lambda: ERRORS)
    assert not result.met and result.stopped.startswith("out of reach: with all 24 layers in float")
    assert [t.purpose for t in result.trials] == ["all layers quantized", "all 24 layers in float"]
