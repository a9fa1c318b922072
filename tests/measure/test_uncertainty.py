"""Confidence intervals on quality drops, the exact McNemar test, and whether the data resolves the budget."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from edgeml.measure.evaluate import compare, sample_scores
from edgeml.measure.uncertainty import bootstrap_mean_ci, drop_uncertainty, mcnemar_exact, resolution


def classifier(n: int, noise: float, seed: int = 0, classes: int = 10):
    """Reference logits, a candidate's (the reference plus noise) and labels the reference mostly gets right."""
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=(n, classes))
    labels = np.where(rng.random(n) < 0.8, ref.argmax(axis=1), rng.integers(0, classes, n))
    return [ref + rng.normal(scale=noise, size=ref.shape)], [ref], labels


@pytest.mark.parametrize("metric", ["accuracy", "agreement", "cosine"])
def test_the_interval_contains_the_point_drop(metric):
    out, ref, labels = classifier(500, 0.6)
    drop = compare(ref, ref, labels)[metric] - compare(out, ref, labels)[metric]
    assert drop > 0
    test = drop_uncertainty(out, ref, labels, metric, seed=3)
    lo, hi = test["ci95"]
    assert lo < drop < hi and hi - lo < 0.2
    assert test["samples"] == 500
    assert test["step"] == (None if metric == "cosine" else 1 / 500)
    if metric == "accuracy":
        assert test["worse"] + test["better"] > 0 and 0 <= test["mcnemar_p"] <= 1
        # the point drop is exactly the net count of samples that became wrong
        assert drop == pytest.approx((test["worse"] - test["better"]) / 500)
    else:
        assert test["mcnemar_p"] is None
    if metric == "agreement":
        assert test["better"] == 0 and test["worse"] / 500 == pytest.approx(drop)
    assert drop_uncertainty(out, ref, labels, metric, seed=3) == test               # seeded: repeatable


@pytest.mark.parametrize("metric", ["accuracy", "agreement", "cosine"])
def test_identical_outputs_have_no_drop_and_a_zero_interval(metric):
    _, ref, labels = classifier(200, 0.0)
    test = drop_uncertainty(ref, ref, labels, metric)
    assert test["ci95"] == [0.0, 0.0]
    if metric != "cosine":
        assert test["worse"] == test["better"] == 0
    assert test["mcnemar_p"] == (1.0 if metric == "accuracy" else None)


@pytest.mark.parametrize("metric", ["accuracy", "cosine"])
def test_the_interval_narrows_as_samples_grow(metric):
    widths = []
    for n in (100, 1000, 10000):
        out, ref, labels = classifier(n, 0.6, seed=n)
        lo, hi = drop_uncertainty(out, ref, labels, metric)["ci95"]
        widths.append(hi - lo)
    assert widths[0] > 2 * widths[1] > 4 * widths[2] > 0        # about 1/sqrt(n): 3.2x per step


def test_bootstrap_of_continuous_values_in_chunks_matches_the_normal_interval():
    values = np.random.default_rng(1).normal(0.3, 1.0, 4000)      # continuous: indices drawn in chunks
    lo, hi = bootstrap_mean_ci(values, 2000, seed=0)
    half = 1.96 * values.std() / math.sqrt(len(values))
    assert lo == pytest.approx(values.mean() - half, abs=0.005) and hi == pytest.approx(values.mean() + half, abs=0.005)
    with pytest.raises(ValueError):
        bootstrap_mean_ci(np.array([]))


def exact_mcnemar(b: int, c: int) -> float:
    """By hand: twice the smaller binomial(b + c, 1/2) tail, capped at 1."""
    m = b + c
    return min(1.0, float(2 * Fraction(sum(math.comb(m, k) for k in range(min(b, c) + 1)), 2 ** m)))


def test_exact_mcnemar():
    assert mcnemar_exact(0, 5) == pytest.approx(0.0625) and mcnemar_exact(5, 0) == pytest.approx(0.0625)
    assert mcnemar_exact(4, 4) == 1.0 and mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(0, 1) == 1.0
    assert mcnemar_exact(1, 4) == pytest.approx(0.375)          # 2 * (1 + 5) / 32
    for b, c in [(2, 9), (7, 19), (30, 12), (150, 190), (900, 1010)]:
        assert mcnemar_exact(b, c) == pytest.approx(exact_mcnemar(b, c), rel=1e-9)
    assert 0 < mcnemar_exact(20_000, 20_600) < 0.01              # large counts stay finite and exact


def test_mcnemar_counts_come_from_the_discordant_samples():
    ref = [np.eye(3)[[0, 1, 2, 0, 1, 2]]]
    labels = np.array([0, 1, 2, 1, 1, 2])                         # the original gets 5 of 6 right
    out = [np.eye(3)[[0, 1, 1, 1, 0, 0]]]                         # right on 0, 1, 3: 3 worse, 1 better
    test = drop_uncertainty(out, ref, labels, "accuracy")
    assert (test["worse"], test["better"]) == (3, 1)
    assert test["mcnemar_p"] == pytest.approx(exact_mcnemar(3, 1)) == pytest.approx(0.625)
    assert sample_scores(out, ref, labels, "accuracy").tolist() == [1, 1, 0, 1, 0, 0]


def test_resolution_of_the_budget():
    note = resolution(64, "accuracy", 0.01)
    assert note == ("the evaluation set has 64 samples: accuracy moves in steps of 1.6 points, coarser than the "
                    "1-point budget (one changed sample already breaks it); give at least 100 samples to resolve it")
    assert resolution(1000, "accuracy", 0.01) is None
    assert resolution(100, "agreement", 0.01) is None                      # a step of exactly the budget
    assert "at least 334 samples" in resolution(300, "agreement", 0.003, "the calibration data")
    assert resolution(300, "agreement", 0.003, "the calibration data").startswith("the calibration data has 300")
    assert resolution(64, "accuracy", 0.0) is None                         # no drop at all: any set can judge it
    assert resolution(64, "cosine", 0.01) is None


def test_the_budget_search_says_when_its_calibration_data_is_too_coarse(digits, files, tmp_path):
    """tune() on 50 calibration samples against a 1-point budget: the search runs, and says the data is coarse."""
    import onnxruntime as ort

    from edgeml.inputs.data import Dataset
    from edgeml.pipeline.bench import Bench
    from edgeml.pipeline.tuning import tune
    from edgeml.progress import Reporter
    from edgeml.targets import get_target
    from edgeml.targets.base import BuildContext

    onnx_path = files["digits.onnx"]
    calibration = Dataset({"input": digits.validation.inputs["input"][:50]}, digits.validation.labels[:50],
                          "50 digits")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    reference = session.run(None, calibration.inputs)
    candidate = next(c for c in get_target("cpu").candidates if c.name == "onnxruntime-int8")
    context = BuildContext(calibration=calibration, max_accuracy_drop=0.01)
    built = candidate.build(onnx_path, tmp_path / "full", context)

    def build(c, folder, ctx):
        return c.build(onnx_path, folder, ctx), False

    def search(budget):
        with Reporter() as reporter, reporter.step("search") as step:
            bench = Bench.of(calibration, reference, "accuracy", batch=16, fixed=False,
                             sample={"input": calibration.inputs["input"][:1]}, threads=1)
            return tune(candidate, bench, onnx_path=onnx_path, work=tmp_path / f"tuning-{budget}", context=context,
                        build=build, max_drop=budget, seconds=30.0, step=step, built=built)

    result = search(0.01).result
    assert result.trials                                                   # it searched as it would otherwise
    assert result.resolution == ("the calibration data has 50 samples: accuracy moves in steps of 2 points, "
                                 "coarser than the 1-point budget (one changed sample already breaks it); give "
                                 "at least 100 samples to resolve it")
    assert result.to_dict()["resolution"] == result.resolution             # what run.tuning records
    assert search(0.05).result.resolution is None


def run_record(metric: str, ci: list[float], test: dict | None, budget: float = 0.01) -> dict:
    """The parts of a run record the notes under the candidate table read."""
    rows = [{"name": "original", "role": "reference", "status": "ok", "selected": False,
             "quality_drop": 0.0, "quality_drop_ci95": [0.0, 0.0], "quality_test": test},
            {"name": "ort-int8", "role": "candidate", "status": "ok", "selected": True,
             "quality_drop": sum(ci) / 2, "quality_drop_ci95": ci, "quality_test": test}]
    return {"data": {"quality_metric": metric}, "selection": {"max_accuracy_drop": budget}, "rows": rows}


def test_notes_under_the_candidate_table():
    from edgeml.report.tables import _drop_cell, quality_notes

    test = {"samples": 2000, "step": 1 / 2000, "worse": 7, "better": 0, "mcnemar_p": None}
    notes = quality_notes(run_record("agreement", [0.0015, 0.0055], test))
    assert notes == ["ort-int8 vs the original: the top-1 class changed on 7 of 2000 evaluation samples."]

    shipped_as_given = run_record("agreement", [0.0015, 0.0055], test)
    shipped_as_given["rows"][0]["selected"], shipped_as_given["rows"][1]["selected"] = True, False
    assert quality_notes(shipped_as_given) == []                   # nothing to say of the original against itself

    notes = quality_notes(run_record("agreement", [0.004, 0.016], test))              # straddles 0.01
    assert notes[0].startswith("The 95% CI of ort-int8's drop (+0.40 to +1.60 pt) contains the budget (1.00 pt)")

    cosine = run_record("cosine", [0.0005, 0.0021], {"samples": 50, "step": None, "worse": None, "better": None,
                                                     "mcnemar_p": None}, budget=0.001)
    assert quality_notes(cosine) == [
        ("The 95% CI of ort-int8's drop (+0.0005 to +0.0021) contains the budget (0.0010): these 50 evaluation "
         "samples cannot tell whether it is within; more samples narrow the interval.")]
    assert _drop_cell(cosine["rows"][1], "cosine") == "+0.0013 (95% CI +0.0005 to +0.0021)"

    coarse = run_record("accuracy", [0.0, 0.0], {"samples": 64, "step": 1 / 64, "worse": 0, "better": 0,
                                                 "mcnemar_p": 1.0})
    assert quality_notes(coarse) == [
        ("> **Too few evaluation samples for the budget:** the evaluation set has 64 samples: accuracy moves in steps "
         "of 1.6 points, coarser than the 1-point budget (one changed sample already breaks it); give at least 100 "
         "samples to resolve it."),
        ("ort-int8 vs the original: no top-1 verdict changed on these 64 evaluation samples, so the drop's interval "
         "is 0 to 0; a true change rate as high as 4.7 % (3/64) would still show none 1 time in 20.")]
    assert quality_notes(run_record("accuracy", [0.0, 0.0], None)) == []                # an old record
