"""The last INT8 attempt of onnx_attempts: the free input dimensions fixed to one calibration sample's shapes for
shape inference and the quantizer, then freed again, so that the quantized model runs at any batch and length.

No small graph was found on which onnx shape inference or onnxruntime's quantizer fails with free input dimensions
and works with static ones (the TensorFlow-converted audio CNN where it happened is not reproduced here): these
tests check what the attempt builds, and, with a quantizer step that accepts only static input sizes, that it comes
last and wins when every other pre-processing fails."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgeml.compress.quantize import Int8Config, onnxruntime_backend
from edgeml.compress.quantize import onnx_attempts as attempts
from edgeml.inputs.data import Dataset

LENGTH = 64


class AudioCNN(nn.Module):
    """Two 1-D convolutions over a waveform, pooled over time, and a linear head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv1d(1, 8, 5, padding=2), nn.ReLU(), nn.Conv1d(8, 16, 5, padding=2),
                                      nn.ReLU(), nn.AdaptiveAvgPool1d(1))
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(-self.features(x).flatten(1))


@pytest.fixture(scope="module")
def audio_cnn(tmp_path_factory):
    """The CNN as ONNX with a free batch and a free length, and calibration waveforms."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("audio") / "audio.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(AudioCNN().eval(), (torch.randn(2, 1, LENGTH),), str(path), dynamo=False,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n", 2: "t"}, "y": {0: "n"}})
    waves = np.sin(np.linspace(0, 40, LENGTH, dtype=np.float32) * np.arange(1, 33, dtype=np.float32)[:, None])
    return path, Dataset({"x": waves[:, None, :]}, None, "sine waves")


def dims(value) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def needs_static_inputs(quantize: attempts.Step) -> attempts.Step:
    """`quantize`, refusing a graph whose inputs have free dimensions (as a quantizer whose shape inference fails
    without their sizes does)."""
    def apply(model, out):
        free = [v.name for v in onnx.load(str(model)).graph.input if not all(isinstance(d, int) and d > 0
                                                                               for d in dims(v))]
        if free:
            raise ValueError(f"shape inference failed: free dimensions in {free}")
        quantize.apply(model, out)
    return attempts.Step(quantize.name, apply)


def test_one_sample_gives_the_static_shapes(audio_cnn):
    _, data = audio_cnn
    assert onnxruntime_backend.sample_shapes(data) == {"x": (1, 1, LENGTH)}
    assert onnxruntime_backend.sample_shapes(None) is None


def test_static_shapes_fix_every_free_dimension_for_shape_inference(audio_cnn, tmp_path):
    path, _ = audio_cnn
    attempts.static_shapes({"x": (1, 1, LENGTH)}).apply(path, tmp_path / "static.onnx")
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(tmp_path / "static.onnx")))
    assert dims(inferred.graph.input[0]) == [1, 1, LENGTH]
    assert inferred.graph.value_info and all(all(isinstance(d, int) and d > 0 for d in dims(v))
                                             for v in inferred.graph.value_info)    # every size known


def test_the_static_shape_attempt_wins_last_and_the_model_runs_at_any_batch_and_length(audio_cnn, tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path, data = audio_cnn
    step = needs_static_inputs(attempts.Step("quantize_dynamic", lambda model, out: quantize_dynamic(
        str(model), str(out), weight_type=QuantType.QInt8)))
    outcome = attempts.quantized(path, tmp_path / "int8.onnx", [step], 11, onnxruntime_backend.sample_shapes(data))
    assert outcome.attempt.endswith("static input shapes")
    assert len(outcome.notes) == 5 and all("free dimensions" in note for note in outcome.notes[:-1])

    quantized = onnx.load(str(outcome.model))
    assert "ConvInteger" in {n.op_type for n in quantized.graph.node}
    assert dims(quantized.graph.input[0]) == ["n", 1, "t"] and dims(quantized.graph.output[0]) == ["n", 4]
    assert not quantized.graph.value_info                        # no size of the sample left behind
    session = ort.InferenceSession(str(outcome.model), providers=["CPUExecutionProvider"])
    float_model = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((3, 1, 2 * LENGTH)).astype(np.float32)
    got, expected = session.run(None, {"x": x})[0], float_model.run(None, {"x": x})[0]
    assert got.shape == (3, 4)
    np.testing.assert_allclose(got, expected, atol=0.05 * np.abs(expected).max())


def test_builds_that_need_no_static_shapes_do_not_use_them(audio_cnn, tmp_path):
    path, data = audio_cnn
    built = onnxruntime_backend.static(path, tmp_path / "int8.onnx", data, Int8Config())
    assert "static input shapes" not in built.attempt and len(built.notes) == 1
    names = [a.name for a in attempts.preprocessing(17, attempts.Step("q", None), 13, {"x": (1, 1, LENGTH)}, path)]
    assert names[-1] == "opset 17, static input shapes"
    assert not any("static" in a.name for a in attempts.preprocessing(17, None, 13, {"x": (1, 1, LENGTH)}, path))
