"""The accuracy-budget search tries the quantizer's alternative calibrations before it keeps layers in float.

The control flow runs on a small quality model (each quantized layer costs a known amount, and each calibration
scales that cost); the real ones run ONNX Runtime on a digits CNN whose INT8 loss is one bad range, and NNCF on
the digits CNN.
"""

import copy
import time
import warnings

import numpy as np
import onnx
import pytest
import torch
from int8_kernels import int8_context

from edgeml.compress.quantize.accuracy import Trial, search
from edgeml.measure.evaluate import predict

LAYERS = [("conv1", "Conv"), ("conv2", "Conv"), ("fc1", "Gemm"), ("fc2", "Gemm")]
COSTS = {"conv1": 0.002, "conv2": 0.001, "fc1": 0.03, "fc2": 0.02}


def quality_model(scale, delay=0.0):
    """Drop = the sum of the quantized layers' costs, times `scale[calibration]` (1 for the default); each layer in
    float adds 1 ms. Records every (excluded, purpose, calibration) it is asked for."""
    asked = []

    def evaluate(excluded, purpose, calibration, reverted=()):
        asked.append((tuple(excluded), purpose, calibration))
        time.sleep(delay)
        drop = scale.get(calibration, 1.0) * sum(c for name, c in COSTS.items() if name not in excluded)
        return Trial(tuple(excluded), 0.9 - drop, drop, 10.0 + len(excluded), 100, purpose)
    evaluate.asked = asked
    return evaluate


def test_a_calibration_within_the_budget_ends_the_search_with_every_layer_in_int8():
    evaluate = quality_model({"percentile": 0.8, "entropy": 0.1, "averaged": 0.05})
    result = search(LAYERS, evaluate, 0.01, 60, calibrations=("percentile", "entropy", "averaged"))
    assert result.met and result.stopped == "budget met" and result.sensitivity == []
    assert result.best.excluded == () and result.best.calibration == "entropy"
    # the full build, all in float, then the calibrations in order until one is within the budget
    assert [t.purpose for t in result.trials] == ["all layers quantized", "all 4 layers in float",
                                                  "calibration: percentile", "calibration: entropy"]
    assert [t.calibration for t in result.trials] == ["", "", "percentile", "entropy"]
    recorded = result.to_dict()
    assert recorded["best"]["calibration"] == "entropy"
    assert [t["calibration"] for t in recorded["trials"]] == ["", "", "percentile", "entropy"]


def test_the_calibration_with_the_smallest_drop_is_the_base_of_every_later_build():
    evaluate = quality_model({"percentile": 0.9, "entropy": 0.4, "averaged": 1.2})
    result = search(LAYERS, evaluate, 0.01, 60, calibrations=("percentile", "entropy", "averaged"))
    assert result.calibration == "entropy" and result.to_dict()["calibration"] == "entropy"
    later = result.trials[5:]                                  # after the full build, all in float, 3 calibrations
    assert later and all(t.calibration == "entropy" for t in later)
    assert {p for _, p, c in evaluate.asked if c == "entropy"} >= {"sensitivity: only fc1 quantized",
                                                                   "fallback step 1: 1 layer(s) in float"}
    # at 0.4 of the cost per layer, keeping fc1 alone in float meets the budget (the default needs fc1 and fc2)
    assert result.met and result.best.excluded == ("fc1",) and result.best.calibration == "entropy"


def test_a_calibration_that_fails_is_recorded_and_the_search_goes_on():
    """NNCF's histogram ranges raise on a byte classifier's values ("Too many bins for data range"): that one
    calibration is out, not the search."""
    quality = quality_model({"entropy": 0.4})

    def evaluate(excluded, purpose, calibration, reverted=()):
        if calibration == "histogram":
            raise ValueError("Too many bins for data range. Cannot create 2048 finite-sized bins.")
        return quality(excluded, purpose, calibration)
    result = search(LAYERS, evaluate, 0.01, 60, calibrations=("histogram", "entropy"))
    assert result.failed == [{"calibration": "histogram",
                              "error": "ValueError: Too many bins for data range. Cannot create 2048 finite-sized "
                                       "bins."}]
    assert result.to_dict()["failed"] == result.failed
    assert result.calibration == "entropy" and result.met and result.best.excluded == ("fc1",)
    from edgeml.report.search import tuning_notes

    notes = tuning_notes({**result.to_dict(), "metric": "accuracy", "data": "calibration data", "row": "x-mixed"})
    assert "calibration histogram failed, left out: ValueError: Too many bins for data range." in " ".join(notes)


def test_calibrations_no_better_than_the_default_leave_it_the_base():
    result = search(LAYERS, quality_model({"percentile": 1.0, "entropy": 3.0}), 0.01, 60,
                    calibrations=("percentile", "entropy"))
    assert result.calibration == "" and all(t.calibration == "" for t in result.trials[4:])
    assert result.met and set(result.best.excluded) == {"fc1", "fc2"}


def test_the_ranking_by_local_error_reads_the_base_calibration_build():
    layers = [(f"conv{i}", "Conv") for i in range(20)]
    costs = {name: 0.0001 for name, _ in layers} | {"conv3": 0.02, "conv11": 0.02}
    asked_for = []

    def evaluate(excluded, purpose, calibration, reverted=()):
        drop = (0.5 if calibration == "averaged" else 1.0) * sum(c for n, c in costs.items() if n not in excluded)
        return Trial(tuple(excluded), 0.9 - drop, drop, 10.0 + len(excluded), 100, purpose)

    def local_errors(calibration):
        asked_for.append(calibration)
        return costs
    result = search(layers, evaluate, 0.005, 60, local_errors=local_errors, calibrations=("averaged",))
    assert asked_for == ["averaged"]
    assert result.met and set(result.best.excluded) == {"conv3", "conv11"} and result.best.calibration == "averaged"


def test_no_calibration_trial_starts_that_would_end_past_the_time_budget():
    evaluate = quality_model({"percentile": 0.9, "entropy": 0.9}, delay=0.2)
    result = search(LAYERS, evaluate, 0.0, 0.7, calibrations=("percentile", "entropy"))
    assert result.stopped == "time budget"
    assert [t.purpose for t in result.trials] == ["all layers quantized", "all 4 layers in float",
                                                  "calibration: percentile"]
    assert result.seconds <= 0.7 + 0.1


# With ONNX Runtime: a loss that is one bad range, which a calibration fixes and no float layer needs to.

def rare_spike(cnn, calibration, fires=3, gain=2e4):
    """The digits CNN with one hidden unit that fires on only `fires` calibration samples, `gain` times larger (its
    consumers scaled down to match): there its activation dwarfs every other unit's, so the min-max range of the
    hidden activation crushes the other units to zero on every sample."""
    model = copy.deepcopy(cnn).eval()
    x = torch.from_numpy(calibration.inputs["input"])
    with torch.no_grad():
        hidden, head = model.classifier[1], model.classifier[3]
        before = hidden(model.features(x).flatten(1))
        unit = int(torch.argmax((before > 0).float().mean(0)))
        hidden.bias[unit] -= torch.kthvalue(before[:, unit], len(x) - fires).values
        hidden.weight[unit] *= gain
        hidden.bias[unit] *= gain
        head.weight[:, unit] /= gain
        assert int((hidden(model.features(x).flatten(1))[:, unit] > 0).sum()) == fires
    return model


@pytest.fixture(scope="module")
def spiked(digits, tmp_path_factory):
    model = rare_spike(digits.model, digits.validation)
    path = tmp_path_factory.mktemp("rare-spike") / "rare-spike.onnx"
    x = torch.from_numpy(digits.test.inputs["input"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x[:2],), str(path), dynamo=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}})
    return path


def ort_int8():
    from edgeml.targets.cpu import CPU

    return next(c for c in CPU.candidates if c.name == "onnxruntime-int8")


def tune_ort(onnx_path, calibration, work, max_drop=0.02):
    from edgeml.pipeline.bench import Bench
    from edgeml.pipeline.tuning import tune
    from edgeml.progress import Step
    from edgeml.runtimes.onnxruntime import OrtRunner

    bench = Bench.of(calibration, predict(OrtRunner(onnx_path, 1), calibration, 64), "agreement", batch=64,
                     fixed=False, sample=calibration.feeds(0, 1), threads=1)
    return tune(ort_int8(), bench, onnx_path=onnx_path, work=work, context=int8_context(calibration),
                build=lambda c, folder, context: (c.build(onnx_path, folder, context), False), max_drop=max_drop,
                seconds=600, step=Step(None, None))


def activation_scale(model_path, consumer_op: str) -> float:
    """The scale of the Q/DQ in front of the first `consumer_op` node that reads a quantized activation."""
    graph = onnx.load(str(model_path)).graph
    constants = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    dequantized = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    reads = [n for n in graph.node if n.op_type == consumer_op]
    scales = [constants[dequantized[i].input[1]] for n in reads for i in n.input
              if i in dequantized and dequantized[i].input[0] not in constants]
    return float(scales[-1])


def test_a_calibration_fixes_a_bad_range_with_every_layer_in_int8(spiked, digits, tmp_path):
    from edgeml.pipeline.repair import _mixed_row
    from edgeml.report.record import Row, Run
    from edgeml.report.search import trials_table

    tuned = tune_ort(spiked, digits.validation, tmp_path / "search")
    result = tuned.result
    full = result.trials[0]
    assert full.calibration == "" and full.drop > 0.5                     # min-max: most predictions change
    assert result.met and result.stopped == "budget met" and result.sensitivity == []
    best = result.best
    assert best.excluded == () and best.calibration in {c.name for c in ort_int8().calibrations}, best
    assert best.drop <= 0.02 and best.purpose == f"calibration: {best.calibration}"
    # the head reads the hidden activation in steps far finer than min-max gave it
    default = ort_int8().build(spiked, tmp_path / "default", int8_context(digits.validation))
    chosen, minmax = (activation_scale(a.folder / a.entry, "Gemm") for a in (tuned.artifact, default))
    assert chosen < minmax / 10, (chosen, minmax)

    candidate = ort_int8()
    run = Run("0", "now", "cpu", {}, {}, {}, {}, {})
    row = _mixed_row(candidate, tuned, run, Row(candidate.name, "onnxruntime", "int8", "candidate"), needed=True)
    assert row.name == "onnxruntime-int8-calibrated" and row.precision == "int8"
    assert row.method == f"{candidate.method}; {best.calibration}; every layer in INT8, to meet the accuracy budget"
    assert run.tuning[candidate.name]["row"] == row.name and run.tuning[candidate.name]["best"]["calibration"]
    header, table = trials_table(run.tuning[candidate.name])        # the report's trial table says which each used
    assert header[2] == "calibration" and table[0][2] == "default" and table[-1][2] == best.calibration


def test_every_calibration_is_its_own_cache_entry(spiked, digits, tmp_path):
    from dataclasses import replace

    from edgeml.cache import Cache
    from edgeml.pipeline.candidates import cached_build

    candidate, context, store = ort_int8(), int8_context(digits.validation), Cache(tmp_path / "cache")
    contexts = [context] + [replace(context, int8=c.applied(context.int8)) for c in candidate.calibrations]

    def build(k, ctx):
        return cached_build(candidate, tmp_path / f"build-{k}", ctx, onnx_path=spiked, store=store, identity={})
    def model(artifact):
        return (artifact.folder / artifact.entry).read_bytes()
    first = [build(k, ctx) for k, ctx in enumerate(contexts)]
    assert not any(restored for _, restored in first)                  # no calibration restored another's build
    assert model(first[1][0]) != model(first[0][0])                    # (which would have been another model)
    again, restored = build("again", contexts[1])
    assert restored and model(again) == model(first[1][0])


def test_each_nncf_calibration_changes_the_quantized_model(files, digits, tmp_path):
    from edgeml.targets.base import BuildContext
    from edgeml.targets.cpu import CPU

    candidate = next(c for c in CPU.candidates if c.name == "openvino-int8")
    context = BuildContext(digits.validation.subset(np.arange(64), "64 digits"))
    assert [c.name for c in candidate.calibrations]
    builds = {"": candidate.build(files["digits.onnx"], tmp_path / "default", context)}
    for c in candidate.calibrations:
        builds[c.name] = candidate.build(files["digits.onnx"], tmp_path / c.name.replace(" ", "-"),
                                         BuildContext(context.calibration, int8=c.applied(context.int8)))
    weights = {name: (a.folder / "model.bin").read_bytes() + (a.folder / "model.xml").read_bytes()
               for name, a in builds.items()}
    assert len(set(weights.values())) == len(weights), [n for n in weights if weights[n] == weights[""]]


def test_a_histogram_calibration_takes_only_the_samples_whose_activations_fit_in_memory(files, digits, monkeypatch):
    """onnxruntime's entropy and percentile calibrators hold every sample's intermediate tensors at once."""
    from edgeml.compress.quantize import Int8Config
    from edgeml.compress.quantize import onnxruntime_backend as ort_quant

    calibration = digits.validation.subset(np.arange(64), "64 digits")
    assert ort_quant.histogram_samples(files["digits.onnx"], calibration, Int8Config()) == 64     # a small CNN fits
    assert ort_quant.histogram_samples(files["digits.onnx"], calibration, Int8Config(max_calibration_samples=10)) == 10
    monkeypatch.setattr(ort_quant, "available_memory", lambda: 1 << 20)       # 1 MB left: 0.5 MB for the tensors
    fitting = ort_quant.histogram_samples(files["digits.onnx"], calibration, Int8Config())
    assert 1 <= fitting < 64
    monkeypatch.setattr(ort_quant, "available_memory", lambda: 2 << 20)
    twice = ort_quant.histogram_samples(files["digits.onnx"], calibration, Int8Config())
    assert twice in (2 * fitting, 2 * fitting + 1)
