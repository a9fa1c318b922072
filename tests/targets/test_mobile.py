"""The mobile target's LiteRT candidates, converted from the digits CNN and run with the LiteRT interpreter."""

import os

import numpy as np
import pytest
import torch

from edgeml.errors import EdgemlError
from edgeml.examples import digits_source
from edgeml.measure.evaluate import predict
from edgeml.runtimes.litert import LITERT
from edgeml.targets.base import BuildContext
from edgeml.targets.mobile import MOBILE


@pytest.fixture(scope="module")
def built(digits, tmp_path_factory):
    """Each candidate's artifact, built from the PyTorch model and calibrated on the validation split."""
    context = BuildContext(calibration=digits.validation, source=digits_source(digits))
    folder = tmp_path_factory.mktemp("mobile")
    return {c.name: c.build(folder / "unused.onnx", folder / c.name, context) for c in MOBILE.candidates}


@pytest.fixture(scope="module")
def reference(digits):
    with torch.inference_mode():
        return digits.model(torch.from_numpy(digits.test.inputs["input"])).numpy()


def _outputs(artifact, data, batch=32):
    return predict(LITERT.open(artifact, 1), data, batch)[0]


def _tensor_types(artifact) -> set[str]:
    details = LITERT.open(artifact, 1).interpreter.get_tensor_details()
    return {np.dtype(d["dtype"]).name for d in details}


def test_candidates():
    assert [(c.name, c.precision, c.quantizer) for c in MOBILE.candidates] == [
        ("litert-fp32", "fp32", None), ("litert-fp16", "fp16", None), ("litert-int8", "int8", "litert")]
    assert all(c.backend is LITERT and c.missing() == [] for c in MOBILE.candidates)


def test_fp32_matches_pytorch(built, digits, reference):
    artifact = built["litert-fp32"]
    assert artifact.entry == "model.tflite" and artifact.runtime_config == {"inputs": ["input"]}
    # 360 test samples: batches of 32, the last one short, through a model converted with batch 1.
    np.testing.assert_allclose(_outputs(artifact, digits.test), reference, atol=1e-4)
    assert "float16" not in _tensor_types(artifact)


def test_fp16_halves_the_weights(built, digits, reference):
    artifact = built["litert-fp16"]
    assert np.abs(_outputs(artifact, digits.test) - reference).max() < 0.05
    assert "float16" in _tensor_types(artifact)
    assert artifact.size_bytes < 0.6 * built["litert-fp32"].size_bytes


def test_int8_is_full_integer_and_accurate(built, digits, reference):
    artifact = built["litert-int8"]
    out = _outputs(artifact, digits.test)
    accuracy = np.mean(out.argmax(1) == digits.test.labels)
    assert accuracy >= np.mean(reference.argmax(1) == digits.test.labels) - 0.02
    assert np.mean(out.argmax(1) == reference.argmax(1)) > 0.97
    assert {"int8", "int32"} <= _tensor_types(artifact) and not _tensor_types(artifact) & {"float32", "float16"}
    assert artifact.size_bytes < 0.35 * built["litert-fp32"].size_bytes


def test_runner_batches_agree(built, digits):
    """A batch of 32 gives what 32 single-sample calls give (the runner loops over the model's batch of 1)."""
    runner = LITERT.open(built["litert-int8"], 1)
    feeds = digits.test.feeds(0, 32)
    batched = runner.run(feeds)[0]
    single = np.concatenate([runner.run(digits.test.feeds(i, i + 1))[0] for i in range(32)])
    assert batched.shape == (32, 10) and batched.dtype == np.float32
    np.testing.assert_array_equal(batched, single)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through Linux /proc")
def test_threads_are_honoured(built, digits):
    """XNNPACK's thread pool adds threads - 1 worker threads to the process."""
    before = len(os.listdir("/proc/self/task"))
    runner = LITERT.open(built["litert-fp32"], 3)
    runner.run(digits.test.feeds(0, 1))
    assert len(os.listdir("/proc/self/task")) - before == 2


def test_onnx_input_is_refused(digits, tmp_path):
    context = BuildContext(calibration=digits.validation, source=None)
    for candidate in MOBILE.candidates:
        with pytest.raises(EdgemlError, match="converts PyTorch models with litert-torch"):
            candidate.build(tmp_path / "model.onnx", tmp_path / candidate.name, context)
