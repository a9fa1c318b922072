"""The accuracy-budget search on its own: which layers it keeps in float, and when it stops.

`evaluate` here is a small quality model (each quantized layer costs a known amount), so the
expected choice is known exactly; the real ONNX Runtime search runs in tests/test_cli_compress.py.
"""

import time

from edgeml.compress.quantize.accuracy import Trial, search

LAYERS = [("conv1", "Conv"), ("conv2", "Conv"), ("fc1", "Gemm"), ("fc2", "Gemm")]


def quality_model(costs, speed=None, delay=0.0):
    """Drop = sum of the costs of the quantized layers; each float layer adds latency."""
    speed = speed or {name: 1.0 for name in costs}

    def evaluate(excluded, purpose):
        time.sleep(delay)
        drop = sum(c for name, c in costs.items() if name not in excluded)
        p50 = 10.0 + sum(speed[name] for name in excluded)
        return Trial(tuple(excluded), 0.9 - drop, drop, p50, 100 + 10 * len(excluded), purpose)
    return evaluate


def test_no_search_when_plain_int8_is_within_budget():
    result = search(LAYERS, quality_model({"conv1": 0.001, "conv2": 0.001, "fc1": 0.001, "fc2": 0.001}), 0.01, 60)
    assert result.met and result.best.excluded == () and len(result.trials) == 1 and result.sensitivity == []


def test_keeps_the_most_sensitive_layers_in_float_until_the_budget_is_met():
    costs = {"conv1": 0.002, "conv2": 0.001, "fc1": 0.03, "fc2": 0.02}
    result = search(LAYERS, quality_model(costs), 0.01, 60)
    assert result.met and result.stopped == "budget met"
    assert set(result.best.excluded) == {"fc1", "fc2"}          # 0.003 left, within 0.01
    ranked = [s["layer"] for s in sorted(result.sensitivity, key=lambda s: -s["drop_when_only_this_is_int8"])]
    assert ranked == ["fc1", "fc2", "conv1", "conv2"]
    assert [s["drop_when_only_this_is_int8"] for s in result.sensitivity] == [0.002, 0.001, 0.03, 0.02]
    # all quantized, all in float, one sensitivity trial per layer, then fallback steps {fc1} and {fc1, fc2}
    assert [len(t.excluded) for t in result.trials] == [0, 4, 3, 3, 3, 3, 1, 2]


def test_stops_when_even_every_layer_in_float_misses_the_budget():
    costs = {"conv1": 0.05, "conv2": 0.05, "fc1": 0.05, "fc2": 0.05}
    result = search(LAYERS, quality_model(costs), -1.0, 60)        # a budget nothing meets
    assert not result.met and result.stopped.startswith("out of reach: with all 4 layers in float")
    assert [len(t.excluded) for t in result.trials] == [0, 4]      # no sensitivity builds
    assert result.best.drop == min(t.drop for t in result.trials)


def test_pareto_front_has_no_dominated_trial():
    costs = {"conv1": 0.002, "conv2": 0.001, "fc1": 0.03, "fc2": 0.02}
    result = search(LAYERS, quality_model(costs, speed={"conv1": 3, "conv2": 3, "fc1": 1, "fc2": 1}), 0.001, 60)
    front = [t for t in result.trials if t.pareto]
    assert front
    for t in front:
        assert not any(o.p50_ms <= t.p50_ms and o.drop <= t.drop and (o.p50_ms < t.p50_ms or o.drop < t.drop)
                       for o in result.trials)
    for t in result.trials:
        if not t.pareto:
            assert any(o.p50_ms <= t.p50_ms and o.drop <= t.drop for o in front)


def test_time_budget_bounds_the_search():
    costs = {"conv1": 0.05, "conv2": 0.05, "fc1": 0.05, "fc2": 0.05}
    result = search(LAYERS, quality_model(costs, delay=0.05), 0.0, 0.12)
    assert result.stopped == "time budget"
    assert result.best.excluded == tuple(name for name, _ in LAYERS)  # only all-in-float met the budget so far
    # Each trial sleeps 0.05 s, so a trial can start within 0.12 s only after at most two others (all-quantized
    # and all-in-float always run): a count, not a wall-clock bound that a loaded machine would break.
    assert 2 <= len(result.trials) <= 3
    assert result.seconds >= 0.12                             # it ran until the time was up


def many_layers(count):
    return [(f"conv{i}", "Conv") for i in range(count)]


def test_many_layers_are_ranked_by_local_error_and_bisected():
    layers = many_layers(40)
    costs = {name: 0.0001 for name, _ in layers}
    for i in range(11):                      # eleven sensitive layers; the rest cost almost nothing
        costs[f"conv{3 * i}"] = 0.01
    errors = {name: cost + 0.001 * (i % 3) for i, (name, cost) in enumerate(costs.items())}
    result = search(layers, quality_model(costs), 0.01, 60, local_errors=lambda: errors)
    assert result.met and result.stopped == "budget met"
    assert set(result.best.excluded) == {f"conv{3 * i}" for i in range(11)}
    assert {s["layer"]: s["local_error"] for s in result.sensitivity} == errors
    # all quantized, all in float, then k = 1, 2, 4, 8, 16 (met), then bisection 12 (met), 10, 11 (met):
    # 10 builds, not 40+
    assert [len(t.excluded) for t in result.trials] == [0, 40, 1, 2, 4, 8, 16, 12, 10, 11]


def test_few_layers_keep_one_build_per_layer_even_with_local_errors():
    costs = {"conv1": 0.002, "conv2": 0.001, "fc1": 0.03, "fc2": 0.02}
    result = search(LAYERS, quality_model(costs), 0.01, 60, local_errors=lambda: {})
    assert "drop_when_only_this_is_int8" in result.sensitivity[0]


def test_bisection_stops_once_it_cannot_beat_a_faster_candidate_within_budget():
    layers = many_layers(24)
    costs = {name: 0.0001 for name, _ in layers} | {"conv3": 0.01, "conv11": 0.01, "conv17": 0.01}
    alone = search(layers, quality_model(costs), 0.005, 60, local_errors=lambda: costs)
    beaten = search(layers, quality_model(costs), 0.005, 60, local_errors=lambda: costs, beat=("other", 11.5))
    assert beaten.stopped.startswith("slower than other") and len(beaten.trials) < len(alone.trials)
    bisection = [t.p50_ms for t in beaten.trials if "largest local error" in t.purpose]
    assert bisection == [11.0, 12.0]                  # k = 1, then k = 2 is no faster than 11.5 ms: stop


def test_a_faster_candidate_does_not_stop_a_search_that_can_still_win():
    layers = many_layers(24)
    costs = {name: 0.0001 for name, _ in layers} | {"conv3": 0.01, "conv11": 0.01, "conv17": 0.01}
    result = search(layers, quality_model(costs), 0.005, 60, local_errors=lambda: costs, beat=("other", 20.0))
    assert result.met and set(result.best.excluded) == {"conv3", "conv11", "conv17"}
