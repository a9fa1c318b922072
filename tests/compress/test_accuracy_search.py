"""The accuracy-budget search on its own: which layers it keeps in float, and when it stops.

`evaluate` here is a small quality model (each quantized layer costs a known amount), so the
expected choice is known exactly; the real ONNX Runtime search runs at the end of this file (a loss
in a Concat) and in tests/cli/test_cli_compress.py.
"""

import copy
import time
import warnings
from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch
from int8_kernels import int8_context

from edgeml.compress.quantize import accuracy
from edgeml.compress.quantize.accuracy import TIMING_NOISE, QuantizerRanking, Trial, best_trial, search
from edgeml.measure.evaluate import predict

LAYERS = [("conv1", "Conv"), ("conv2", "Conv"), ("fc1", "Gemm"), ("fc2", "Gemm")]


def quality_model(costs, speed=None, delay=0.0, noise=0.0):
    """Drop = sum of the costs of the quantized layers, its standard error `noise` times that; each float layer adds
    latency."""
    speed = speed or {name: 1.0 for name in costs}

    def evaluate(excluded, purpose, calibration, reverted=()):
        time.sleep(delay)
        drop = sum(c for name, c in costs.items() if name not in excluded)
        p50 = 10.0 + sum(speed[name] for name in excluded)
        return Trial(tuple(excluded), 0.9 - drop, drop, p50, 100 + 10 * len(excluded), purpose, drop_se=noise * drop)
    return evaluate


def test_the_best_trial_is_the_fewest_in_float_of_those_the_caller_timed_as_fast():
    one = Trial(("fc1",), 0.89, 0.005, 10.0, 100, "fallback step 1")
    every = Trial(("conv1", "conv2", "fc1", "fc2"), 0.9, 0.0, 20.0, 140, "all in float")
    over = Trial((), 0.85, 0.05, 5.0, 90, "all layers quantized")
    seen = []

    def timed_together(winner):
        def as_fast(trials):
            seen.append(list(trials))
            return [t for t in trials if t is winner]
        return as_fast
    # the short runs say all-in-float is twice as slow; timed together it is the faster: it is kept
    assert best_trial([over, one, every], 0.01, timed_together(every)) is every
    assert seen[-1] == [one, every]                                  # only trials within the budget take part
    assert best_trial([over, one, every], 0.01, lambda trials: trials) is one     # tied: fewer layers in float


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


def test_a_build_the_same_as_the_float_model_is_never_the_result():
    """Quantizing only a Relu builds the float model (a backend quantizes a Relu only beside a Conv or Gemm); where
    INT8 is slower than float, that trial is the fastest within the budget, yet it is no INT8 build."""
    layers = LAYERS + [("relu", "Relu")]
    compute = {name for name, _ in LAYERS}

    def evaluate(excluded, purpose, calibration, reverted=()):
        quantized = compute - set(excluded)
        drop = 0.05 * ("fc1" in quantized)
        digest = "float" if not quantized else ",".join(sorted(quantized))
        return Trial(tuple(excluded), 0.9 - drop, drop, 10.0 + 2 * len(quantized), 100, purpose, digest=digest)
    result = search(layers, evaluate, 0.01, 60)
    assert result.met and any(t.purpose == "sensitivity: only relu quantized" and t.drop == 0 for t in result.trials)
    assert result.best.digest != "float" and "fc1" in result.best.excluded


def test_a_trial_is_within_the_budget_only_with_its_noise_on_the_tuning_data():
    costs = {"conv1": 0.005, "conv2": 0.003, "fc1": 0.03, "fc2": 0.02}
    assert set(search(LAYERS, quality_model(costs), 0.01, 60).best.excluded) == {"fc1", "fc2"}    # 0.008 left
    # 0.008 with a standard error of 0.004 is not shown to be within 0.01: one more layer in float
    result = search(LAYERS, quality_model(costs, noise=0.5), 0.01, 60)
    assert result.met and len(result.best.excluded) == 3 and {"fc1", "fc2"} < set(result.best.excluded)
    assert result.best.drop + accuracy.MARGIN_SE * result.best.drop_se <= 0.01


def test_the_report_shows_each_trials_standard_error_and_what_the_budget_check_adds():
    from edgeml.report.search import trials_table, tuning_notes

    result = search(LAYERS, quality_model({"conv1": 0.005, "conv2": 0.003, "fc1": 0.03, "fc2": 0.02}, noise=0.5),
                    0.01, 60)
    recorded = {**result.to_dict(), "metric": "cosine", "data": "calibration data", "row": "x-mixed"}
    header, rows = trials_table(recorded)
    assert header[2:4] == ["cosine drop", "standard error"] and rows[0][2:4] == ["+0.0580", "0.0290"]
    assert ("a configuration counts as within the budget there when its drop plus 1 standard error(s) of it over the "
            "tuning samples is") in " ".join(tuning_notes(recorded))


def test_the_best_trial_keeps_fewer_layers_in_float_unless_another_is_clearly_faster():
    one = Trial(("fc1",), 0.89, 0.005, 10.0, 100, "fallback step 1")
    every = Trial(("conv1", "conv2", "fc1", "fc2"), 0.9, 0.0, 10.0 / (0.99 * TIMING_NOISE), 140, "all in float")
    over = Trial((), 0.85, 0.05, 5.0, 90, "all layers quantized")
    # all in float timed a little faster (within the noise of a short run): the one with a single layer in float
    assert best_trial([over, one, every], 0.01) is one
    clearly = replace(every, p50_ms=10.0 / (1.01 * TIMING_NOISE))
    assert best_trial([over, one, clearly], 0.01) is clearly
    assert best_trial([over, one, every], 0.001) is every           # only it is within this budget
    assert best_trial([over, one], 0.0) is one                      # none within: the smallest drop


def test_stops_when_even_every_layer_in_float_misses_the_budget():
    costs = {"conv1": 0.05, "conv2": 0.05, "fc1": 0.05, "fc2": 0.05}
    result = search(LAYERS, quality_model(costs), -1.0, 60)        # a budget nothing meets
    assert not result.met and result.stopped.startswith("out of reach: with all 4 layers in float")
    assert [len(t.excluded) for t in result.trials] == [0, 4]      # no sensitivity builds
    assert result.best == result.trials[0]          # all in float is the float model, never the result


def test_the_search_aims_lower_where_the_tuning_data_understates_the_evaluation_drop():
    costs = {"conv1": 0.001, "conv2": 0.001, "fc1": 0.004, "fc2": 0.002}    # 0.008 on the tuning data
    assert search(LAYERS, quality_model(costs), 0.01, 60).best.excluded == ()    # "met", with no change
    # 0.012 on the evaluation data: the tuning data shows 2/3 of the loss, so the search aims at 2/3 of the budget
    result = search(LAYERS, quality_model(costs), 0.01, 60, evaluation_drop=0.012)
    assert result.aim == pytest.approx(0.01 * 0.008 / 0.012)
    assert result.met and result.best.excluded == ("fc1",) and result.best.drop <= result.aim
    from edgeml.report.search import tuning_notes
    notes = tuning_notes({**result.to_dict(), "metric": "cosine", "data": "calibration data", "row": "x-mixed",
                          "evaluation_drop": 0.012})
    assert ("aimed at a drop of at most 0.0067 there, below the budget: plain INT8 dropped +0.0080 there and "
            "+0.0120 on the evaluation data") in " ".join(notes)
    # within the budget on both data, or the tuning data already the harsher judge: the budget as it is
    assert search(LAYERS, quality_model(costs), 0.01, 60, evaluation_drop=0.009).aim is None
    assert search(LAYERS, quality_model(costs), 0.01, 60, evaluation_drop=0.007).aim is None
    # a tuning drop of nothing at all cannot say how much lower: never below a quarter of the budget
    assert accuracy.aimed(0.01, -0.001, 0.05) == pytest.approx(0.01 * accuracy.AIM_FLOOR)


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
    result = search(LAYERS, quality_model(costs, delay=0.05), 0.0, 0.18)
    assert result.stopped == "time budget" and not result.met   # only all-in-float (the float model) met it so far
    assert result.best.excluded != tuple(name for name, _ in LAYERS)
    # Each trial sleeps 0.05 s, and none starts that the longest trial would carry past 0.18 s: all-quantized,
    # all-in-float and at most one sensitivity trial (two on a machine slow enough to stretch each trial to 0.06 s)
    assert 2 <= len(result.trials) <= 3
    assert result.seconds < 0.18 + 0.05                       # within the budget, but for one trial's jitter


def test_no_trial_starts_that_would_end_past_the_budget():
    costs = {"conv1": 0.05, "conv2": 0.05, "fc1": 0.05, "fc2": 0.05}
    result = search(LAYERS, quality_model(costs, delay=0.2), 0.0, 0.3)
    # the all-quantized trial took 0.2 s: all-in-float would end near 0.4 s, past 0.3 s, so it never starts
    assert result.stopped == "time budget" and len(result.trials) == 1 and result.seconds < 0.3


def many_layers(count):
    return [(f"conv{i}", "Conv") for i in range(count)]


def test_many_layers_are_ranked_by_local_error_and_bisected():
    layers = many_layers(40)
    costs = {name: 0.0001 for name, _ in layers}
    for i in range(11):                      # eleven sensitive layers; the rest cost almost nothing
        costs[f"conv{3 * i}"] = 0.01
    errors = {name: cost + 0.001 * (i % 3) for i, (name, cost) in enumerate(costs.items())}
    result = search(layers, quality_model(costs), 0.01, 60, local_errors=lambda _: errors)
    assert result.met and result.stopped == "budget met"
    assert set(result.best.excluded) == {f"conv{3 * i}" for i in range(11)}
    assert {s["layer"]: s["local_error"] for s in result.sensitivity} == errors
    # all quantized, all in float, then k = 1, 2, 4, 8, 16 (met), then bisection 12 (met), 10, 11 (met):
    # 10 builds, not 40+
    assert [len(t.excluded) for t in result.trials] == [0, 40, 1, 2, 4, 8, 16, 12, 10, 11]


def test_few_layers_keep_one_build_per_layer_even_with_local_errors():
    costs = {"conv1": 0.002, "conv2": 0.001, "fc1": 0.03, "fc2": 0.02}
    result = search(LAYERS, quality_model(costs), 0.01, 60, local_errors=lambda _: {})
    assert "drop_when_only_this_is_int8" in result.sensitivity[0]


def slower_than(p50_ms):
    """`search`'s not_faster for a configuration within the budget that runs in `p50_ms` (exactly, in this model)."""
    return lambda t: f"slower than other ({t.p50_ms} ms >= {p50_ms} ms)" if t.p50_ms >= p50_ms else None


def test_bisection_stops_once_it_cannot_beat_a_faster_candidate_within_budget():
    layers = many_layers(24)
    costs = {name: 0.0001 for name, _ in layers} | {"conv3": 0.01, "conv11": 0.01, "conv17": 0.01}
    alone = search(layers, quality_model(costs), 0.005, 60, local_errors=lambda _: costs)
    beaten = search(layers, quality_model(costs), 0.005, 60, local_errors=lambda _: costs, not_faster=slower_than(11.5))
    assert beaten.stopped.startswith("slower than other") and len(beaten.trials) < len(alone.trials)
    bisection = [t.p50_ms for t in beaten.trials if "largest local error" in t.purpose]
    assert bisection == [11.0, 12.0]                  # k = 1, then k = 2 is no faster than 11.5 ms: stop


def test_a_faster_candidate_does_not_stop_a_search_that_can_still_win():
    layers = many_layers(24)
    costs = {name: 0.0001 for name, _ in layers} | {"conv3": 0.01, "conv11": 0.01, "conv17": 0.01}
    result = search(layers, quality_model(costs), 0.005, 60, local_errors=lambda _: costs, not_faster=slower_than(20.0))
    assert result.met and set(result.best.excluded) == {"conv3", "conv11", "conv17"}


# Quantizers instead of layers: the output error is a known sum over the quantizers left in INT8.

def quantizer_model(costs, hidden=None, delay=0.0):
    """(evaluate, ranking): the drop (and the output error) is the sum of the costs of the quantizers not reverted,
    plus, for each `hidden` quantizer q: (mask, cost), its cost once `mask` is reverted and q is not (a range that
    crushes its input hides the error of the next one). Every layer in float is the float model, the slowest; each
    quantizer reverted adds 1 ms."""
    def error(reverted):
        return (sum(c for q, c in costs.items() if q not in reverted)
                + sum(c for q, (mask, c) in (hidden or {}).items() if mask in reverted and q not in reverted))

    def evaluate(excluded, purpose, calibration, reverted=()):
        time.sleep(delay)
        drop = 0.0 if excluded else error(set(reverted))
        return Trial(tuple(excluded), 0.9 - drop, drop, 10.0 + len(reverted) + 20.0 * len(excluded), 100, purpose)
    names = [*costs, *(hidden or {})]
    return evaluate, QuantizerRanking([(q, f"output of {q}") for q in names], error, 8)


def test_quantizers_are_reverted_greedily_and_ranked_again_after_each_revert():
    costs = {f"q{i}": 0.01 for i in range(10) if i != 5} | {"q3": 0.6, "q7": 0.3}
    evaluate, ranking = quantizer_model(costs, hidden={"q5": ("q3", 0.2)}, delay=0.01)
    asked = []
    result = search(LAYERS, evaluate, 0.1, 60, quantizers=lambda calibration, seconds: asked.append(seconds) or ranking)
    assert result.met and result.stopped == "budget met"
    # q5 costs nothing until q3 is reverted: ranked last alone, found by the ranking after q3 and q7
    assert result.best.reverted == ("q3", "q7", "q5") and result.best.excluded == ()
    assert [t.purpose for t in result.trials[2:]] == [
        "quantizers: 1 reverted, the last: output of q3", "quantizers: 2 reverted, the last: output of q7",
        "quantizers: 3 reverted, the last: output of q5"]
    gains = {s["quantizer"]: s["gain"] for s in result.sensitivity}
    assert gains["q3"] == pytest.approx(0.6 - 0.2) and gains["q5"] == 0      # alone, q3 reveals q5's error
    assert result.ranking == {"quantizers": 10, "ranked": 10, "samples": 8, "output_error": pytest.approx(0.97)}
    assert 0 < asked[0] <= 60 * accuracy.RANKING_SHARE                      # the ranking's share of the time left
    from edgeml.report.search import sensitivity_table, trials_table, tuning_notes

    recorded = result.to_dict() | {"metric": "cosine", "data": "calibration data", "row": "x-mixed"}
    header, rows = sensitivity_table(recorded)
    assert header[:2] == ["quantizer", "what it quantizes"] and rows[0][:2] == ["q3", "output of q3"]
    header, rows = trials_table(recorded)
    assert header[2] == "quantizers reverted" and [row[2] for row in rows[2:]] == ["1", "2", "3"]
    notes = tuning_notes(recorded)
    assert notes[0].startswith("plain INT8 broke the budget on the evaluation data; the search met the budget with "
                               "3 quantizer(s) reverted to fp32 (row x-mixed)")
    assert ("quantizers: 10 in the fully quantized build, 10 ranked by the output error each removes when reverted "
            "alone, on 8 tuning samples (output error with all quantized: 0.9700)") in notes


def test_a_flat_ranking_reverts_the_top_quantizers_together_and_bisects():
    costs = {f"q{i:02d}": 0.01 for i in range(40)}              # the sum of many small errors: 0.40
    evaluate, ranking = quantizer_model(costs)
    result = search(LAYERS, evaluate, 0.105, 60, quantizers=lambda calibration, seconds: ranking)
    assert result.met and len(result.best.reverted) == 30                 # 0.10 left, the fewest that meet 0.105
    groups = [len(t.reverted) for t in result.trials[2:]]
    assert groups == [1, 2, 4, 8, 16, 32, 24, 28, 30, 29]                 # doubling, then bisection
    assert all("together" in t.purpose for t in result.trials[2:])


def test_a_search_over_quantizers_stops_when_the_trial_is_no_faster_than_the_best_row():
    costs = {f"q{i:02d}": 0.01 for i in range(40)}
    evaluate, ranking = quantizer_model(costs)
    result = search(LAYERS, evaluate, 0.105, 60, quantizers=lambda calibration, seconds: ranking,
                    not_faster=slower_than(13.5))                          # 10 ms + 1 ms per quantizer reverted
    assert result.stopped == "slower than other (14.0 ms >= 13.5 ms)"
    assert [len(t.reverted) for t in result.trials[2:]] == [1, 2, 4]


def test_a_ranking_that_fails_leaves_the_layers_to_the_search():
    def broken(calibration, seconds):
        raise RuntimeError("the switchable model does not load\nsecond line")
    result = search(LAYERS, quality_model({"conv1": 0.002, "conv2": 0.001, "fc1": 0.03, "fc2": 0.02}), 0.01, 60,
                    quantizers=broken)
    assert result.failed == [{"step": "ranking the quantizers",
                              "error": "RuntimeError: the switchable model does not load"}]
    assert result.met and set(result.best.excluded) == {"fc1", "fc2"} and result.ranking is None
    from edgeml.report.search import tuning_notes

    recorded = result.to_dict() | {"metric": "agreement", "data": "calibration data", "row": "x-mixed"}
    assert ("ranking the quantizers failed, left out: RuntimeError: the switchable model does not load"
            in tuning_notes(recorded))


# The real search, with ONNX Runtime: a model whose INT8 loss is in a Concat, not in a compute layer.

class TwoRanges(torch.nn.Module):
    """The digits CNN with its last features scaled down 1000x (the head scaled up to match), concatenated
    with a wide-range branch the head ignores: the same function in float. In INT8 the Concat's output
    takes the wide branch's range and crushes the features to zero, whichever compute layers stay in float."""

    def __init__(self, cnn):
        super().__init__()
        self.features, self.classifier = copy.deepcopy(cnn.features), copy.deepcopy(cnn.classifier)
        torch.manual_seed(0)
        self.wide = torch.nn.Conv2d(1, 8, 4, stride=4)                 # 8x8 digits -> the features' 2x2
        with torch.no_grad():
            last = self.features[5]
            last.weight /= 1000
            last.bias /= 1000
            self.wide.weight *= 1000
            self.wide.bias *= 1000
            head = self.classifier[1]
            wider = torch.nn.Linear(head.in_features + 8 * 2 * 2, head.out_features)
            wider.weight.zero_()
            wider.weight[:, :head.in_features] = head.weight * 1000
            wider.bias.copy_(head.bias)
            self.classifier[1] = wider

    def forward(self, input):
        return self.classifier(torch.cat([self.features(input), self.wide(input)], 1))


@pytest.fixture(scope="module")
def two_ranges(digits, tmp_path_factory):
    model = TwoRanges(digits.model).eval()
    x = torch.from_numpy(digits.test.inputs["input"])
    with torch.no_grad():
        assert torch.equal(model(x).argmax(1), digits.model(x).argmax(1))
    path = tmp_path_factory.mktemp("two-ranges") / "two-ranges.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x[:2],), str(path), dynamo=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}})
    return path


def ort_int8():
    from edgeml.targets.cpu import CPU

    return next(c for c in CPU.candidates if c.name == "onnxruntime-int8")


def run_tune(candidate, onnx_path, calibration, data, max_drop, work):
    from edgeml.pipeline.bench import Bench
    from edgeml.pipeline.tuning import tune
    from edgeml.progress import Step
    from edgeml.runtimes.onnxruntime import OrtRunner

    context = int8_context(calibration)
    reference = predict(OrtRunner(onnx_path, 1), data, 64)
    bench = Bench.of(data, reference, "agreement", batch=64, fixed=False, sample=calibration.feeds(0, 1), threads=1)
    return tune(candidate, bench, onnx_path=onnx_path, work=work, context=context,
                build=lambda c, folder, context: (c.build(onnx_path, folder, context), False), max_drop=max_drop,
                seconds=600, step=Step(None, None))


def test_the_search_reverts_the_concat_range_where_compute_layers_alone_cannot_meet_the_budget(
        two_ranges, digits, tmp_path):
    candidate = ort_int8()
    calibration = digits.validation
    compute_only = replace(candidate, quantizers=None,
                           layers=lambda path: [(name, op) for name, op in candidate.layers(path)
                                                if op in ("Conv", "ConvTranspose", "Gemm", "MatMul")])
    before = run_tune(compute_only, two_ranges, calibration, calibration, 0.02, tmp_path / "compute-only")
    assert before.result.trials[0].drop > 0.5                      # plain INT8: most predictions change
    assert before.result.stopped.startswith("out of reach: with all 6 layers in float")   # 4 Conv, 2 Gemm

    tuned = run_tune(candidate, two_ranges, calibration, calibration, 0.02, tmp_path / "quantizers")
    result = tuned.result
    assert result.met and result.stopped == "budget met" and result.best.drop <= 0.02
    # each trial's drop comes with its standard error over the tuning samples (agreement: each sample 0 or 1)
    full = result.trials[0]
    n = len(calibration)
    assert full.drop_se == pytest.approx(np.sqrt(full.drop * (1 - full.drop) / (n - 1)), rel=1e-6)
    assert result.best.drop + accuracy.MARGIN_SE * result.best.drop_se <= 0.02
    # one quantizer, the Concat's output range (and the Flatten's copy of it, which shares its scale), reverted
    assert result.best.reverted == ("/Concat_output_0",) and result.best.excluded == ()
    ranked = sorted(result.sensitivity, key=lambda s: -s["gain"])
    assert ranked[0]["what"] == "output of Concat '/Concat'"
    assert ranked[0]["gain"] > 0.9 * result.ranking["output_error"]
    assert all(s["gain"] < 0.1 * result.ranking["output_error"] for s in ranked[1:])
    assert result.ranking["ranked"] == result.ranking["quantizers"] == len(result.sensitivity)
    assert [t.purpose for t in result.trials][-1] == "quantizers: 1 reverted, the last: output of Concat '/Concat'"
    graph = onnx.load(str(tuned.artifact.folder / tuned.artifact.entry)).graph
    quantized = [n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"]
    assert "/Concat_output_0" not in quantized and len(quantized) >= 5     # the rest stays INT8


def test_openvino_reverts_the_fake_quantize_whose_range_the_concat_shares(two_ranges, digits, tmp_path):
    """NNCF quantizes the Concat's inputs with one range (the wide branch's): the FakeQuantize on the features
    branch crushes them, and reverting it alone meets the budget."""
    pytest.importorskip("nncf")
    from edgeml.targets.cpu import CPU

    candidate = next(c for c in CPU.candidates if c.name == "openvino-int8")
    tuned = run_tune(candidate, two_ranges, digits.validation, digits.validation, 0.02, tmp_path)
    result = tuned.result
    assert result.met and len(result.best.reverted) == 1 and result.best.excluded == ()
    ranked = sorted(result.sensitivity, key=lambda s: -s["gain"])
    assert ranked[0]["quantizer"] == result.best.reverted[0]
    assert ranked[0]["gain"] > 0.9 * result.ranking["output_error"] > 0.5
    import openvino as ov

    def fake_quantizes(artifact) -> int:
        model = ov.Core().read_model(str(artifact.folder / artifact.entry))
        return sum(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())
    full = candidate.build(two_ranges, tmp_path / "full", int8_context(digits.validation))
    assert fake_quantizes(tuned.artifact) == fake_quantizes(full) - 1


def test_the_layer_search_keeps_the_concat_in_float_for_a_backend_without_quantizers(two_ranges, digits, tmp_path):
    candidate = replace(ort_int8(), quantizers=None)
    calibration = digits.validation
    tuned = run_tune(candidate, two_ranges, calibration, calibration, 0.02, tmp_path)
    result = tuned.result
    assert result.met and result.stopped == "budget met" and result.best.drop <= 0.02
    ops = dict(candidate.layers(two_ranges))
    assert "Concat" in {ops[name] for name in result.best.excluded}
    # alone in INT8, the Concat crushes the features, and so does the Gemm reading them (through a Flatten)
    assert {s["op"] for s in result.sensitivity if s["drop_when_only_this_is_int8"] > 0.5} == {"Concat", "Gemm"}
    ceiling = result.trials[1]
    assert set(ceiling.excluded) == set(ops) and ceiling.drop == 0        # all in float: the float model
    graph = onnx.load(str(tuned.artifact.folder / tuned.artifact.entry)).graph
    concat = next(n for n in graph.node if n.op_type == "Concat")
    quantized = [n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"]
    assert concat.output[0] not in quantized                             # mixed: the Concat's output stays float
    assert quantized and result.best is not ceiling          # the float model is never the result


def test_keeping_every_listed_op_in_float_gives_the_float_model(two_ranges, digits, tmp_path):
    from edgeml.compress.quantize import Int8Config
    from edgeml.compress.quantize import onnxruntime_backend as ort_quant
    from edgeml.runtimes.onnxruntime import OrtRunner

    layers = ort_quant.compute_layers(two_ranges)
    assert {"Conv", "Relu", "MaxPool", "Concat", "Gemm"} <= {op for _, op in layers}
    built = ort_quant.run(two_ranges, tmp_path / "all-float.onnx", digits.validation,
                          Int8Config(exclude=tuple(name for name, _ in layers)))
    assert not {"QuantizeLinear", "DequantizeLinear"} & {n.op_type for n in onnx.load(str(built)).graph.node}
    data = digits.test
    np.testing.assert_allclose(predict(OrtRunner(built, 1), data, 64)[0],
                               predict(OrtRunner(two_ranges, 1), data, 64)[0], rtol=1e-4, atol=1e-4)


def test_training_samples_join_the_tuning_data_until_the_budget_is_resolved(digits):
    from edgeml.measure.uncertainty import resolution
    from edgeml.pipeline.tuning import samples_needed, tuning_data

    calibration = digits.validation.subset(np.arange(64), "calibration")
    assert samples_needed("agreement", 0.01) == 100 and samples_needed("cosine", 0.01) == 1
    assert resolution(99, "agreement", 0.01) and not resolution(100, "agreement", 0.01)

    grown = tuning_data(calibration, digits.train, "accuracy", 0.01)
    assert len(grown) == 100 and not resolution(len(grown), "accuracy", 0.01)
    np.testing.assert_array_equal(grown.inputs["input"][:64], calibration.inputs["input"])
    train_rows = {row.tobytes() for row in digits.train.inputs["input"]}
    assert all(row.tobytes() in train_rows for row in grown.inputs["input"][64:])
    assert grown.labels is not None and len(grown.labels) == 100
    assert "36 training samples" in grown.source

    assert tuning_data(calibration, None, "accuracy", 0.01) is calibration              # nothing to add
    assert tuning_data(calibration, digits.train, "accuracy", 0.05) is calibration      # 64 resolve 5 points
    assert tuning_data(calibration, digits.train, "cosine", 0.01) is calibration        # no step to resolve
    few = digits.train.subset(np.arange(10), "few")
    assert len(tuning_data(calibration, few, "accuracy", 0.01)) == 74                   # all it has, still short
    assert resolution(74, "accuracy", 0.01)


def test_the_search_judges_on_the_grown_tuning_data(two_ranges, digits, tmp_path):
    from edgeml.pipeline.tuning import tuning_data

    calibration = digits.validation.subset(np.arange(64), "calibration")
    alone = run_tune(ort_int8(), two_ranges, calibration, calibration, 0.01, tmp_path / "alone")
    assert alone.result.resolution and "has 64 samples" in alone.result.resolution
    data = tuning_data(calibration, digits.train, "agreement", 0.01)
    tuned = run_tune(ort_int8(), two_ranges, calibration, data, 0.01, tmp_path / "grown")
    assert tuned.result.resolution is None and tuned.result.met
    assert "36 training samples" in tuned.data and tuned.data.startswith("calibration data: ranges;")


def test_local_errors_rank_the_concat_and_the_gemm_it_feeds_above_the_followers(two_ranges, digits, tmp_path,
                                                                                 monkeypatch):
    """Models with many layers rank them by local error and bisect; here forced on a small one."""
    monkeypatch.setattr(accuracy, "TRIALS_UP_TO", 4)
    candidate = replace(ort_int8(), quantizers=None)
    ops = dict(candidate.layers(two_ranges))
    tuned = run_tune(candidate, two_ranges, digits.validation, digits.validation, 0.02, tmp_path)
    result = tuned.result
    errors = {s["layer"]: s["local_error"] for s in result.sensitivity}
    followers = [name for name, op in ops.items() if op in ("Relu", "MaxPool", "Flatten")]
    concat = next(name for name, op in ops.items() if op == "Concat")
    first_gemm = next(name for name, op in ops.items() if op == "Gemm")       # reads the Concat through a Flatten
    assert min(errors[concat], errors[first_gemm]) > 0.5 > max(errors[name] for name in followers), errors
    assert result.met and {concat, first_gemm} <= set(result.best.excluded)
    assert len(result.trials) < 2 + len(ops)                                  # fewer builds than one per layer
