"""Quantization-aware distillation as the last resort of the accuracy-budget phase: with training data and a
PyTorch model, an INT8 candidate that broke the budget gets a `-qat` row, every layer in INT8, judged and timed
like the others, on the digits CNN made hard to quantize (a few first-conv channels carry a 300x wider range)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

import edgeml
from edgeml.progress import Reporter

QUICK = {"measure_seconds": 0.05, "threads": 1}


@pytest.fixture(scope="module")
def hard(digits):
    model = copy.deepcopy(digits.model)
    with torch.no_grad():
        first, second = model.features[0], model.features[2]
        first.weight[:8] *= 300.0
        first.bias[:8] *= 300.0
        second.weight[:, :8] /= 300.0
    return model


@pytest.fixture(scope="module")
def data(digits, tmp_path_factory):
    folder = tmp_path_factory.mktemp("qat-data")
    np.savez(folder / "calib.npz", input=digits.validation.inputs["input"], labels=digits.validation.labels)
    np.savez(folder / "eval.npz", input=digits.test.inputs["input"], labels=digits.test.labels)
    np.savez(folder / "train.npz", input=digits.train.inputs["input"])          # label-free
    return folder


def optimize(model, data, out, **settings):
    return edgeml.optimize(model, input_shapes=["input:?x1x8x8"], calib_data=data / "calib.npz",
                           eval_data=data / "eval.npz", quantizer="ort", precision="int8", max_accuracy_drop=0.01,
                           out=out, cache=False, reporter=Reporter(), **{**QUICK, "tuning_budget": 60, **settings})


def test_training_data_adds_a_quantization_aware_row_that_recovers_int8(hard, data, tmp_path):
    optimize(hard, data, tmp_path / "out", train_data=data / "train.npz")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    rows = {r["name"]: r for r in report["rows"]}
    plain, qat = rows["onnxruntime-int8"], rows["onnxruntime-int8-qat"]
    assert plain["quality_drop"] > 0.03, "the model must be hard to quantize"
    assert qat["status"] == "ok" and qat["precision"] == "int8" and qat["latency"]["p50_ms"] > 0
    assert qat["quality_drop"] <= plain["quality_drop"] - (plain["quality_drop"] - 0.01) / 2   # half the way back
    record = report["tuning"]["onnxruntime-int8"]["quantization_aware"]
    assert record["row"] == "onnxruntime-int8-qat" and record["drop"] == qat["quality_drop"]
    assert "fine-tuned with INT8 fake quantization" in record["notes"][0]
    assert "quantization-aware distillation: row onnxruntime-int8-qat" in (tmp_path / "out" / "report.md").read_text()


def test_without_training_data_the_report_says_how_to_get_it(hard, data, tmp_path):
    optimize(hard, data, tmp_path / "out", tuning_budget=5)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "onnxruntime-int8-qat" not in {r["name"] for r in report["rows"]}
    assert report["tuning"]["onnxruntime-int8"]["quantization_aware"]["stopped"].startswith(
        "not run: it needs training data (--train-data")
