"""INT8 passes on the digits CNN: real graphs, real calibration, accuracy kept."""

import numpy as np
import onnx
import onnxruntime as ort
import openvino as ov
from onnx import numpy_helper

from edgeml.compress.quantize import onnxruntime_backend, openvino_backend
from edgeml.data import random_dataset
from edgeml.specs import TensorSpec


def accuracy(model_path, dataset):
    logits = ort.InferenceSession(str(model_path)).run(None, dataset.inputs)[0]
    return float(np.mean(logits.argmax(1) == dataset.labels))


def scales(path):
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer
            if i.name.endswith("_scale")}


def test_onnxruntime_int8_is_qdq_per_channel_and_keeps_accuracy(files, digits, tmp_path):
    out = onnxruntime_backend.run(files["digits.onnx"], tmp_path / "int8.onnx", digits.validation)
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count("QuantizeLinear") >= 5 and ops.count("DequantizeLinear") >= 10
    per_channel = [s for s in scales(out).values() if s.ndim == 1 and s.size > 1]
    assert {s.size for s in per_channel} == {10, 32, 64, 128}       # one scale per output channel
    assert out.stat().st_size < files["digits.onnx"].stat().st_size / 3
    assert accuracy(out, digits.test) >= accuracy(files["digits.onnx"], digits.test) - 0.01


def test_onnxruntime_calibration_uses_the_data_it_is_given(files, digits, tmp_path):
    real = onnxruntime_backend.run(files["digits.onnx"], tmp_path / "real.onnx", digits.validation)
    noise = random_dataset([TensorSpec("input", ("n", 1, 8, 8))], 64, seed=0, role="calibration")
    noise.inputs["input"] *= 200                  # ranges far wider than real pixels (0..1)
    fake = onnxruntime_backend.run(files["digits.onnx"], tmp_path / "noise.onnx", noise)
    def input_scale(path):
        return next(v for k, v in scales(path).items() if k.startswith("input"))
    assert input_scale(fake) > 100 * input_scale(real)
    assert accuracy(fake, digits.test) < 0.5 < 0.95 < accuracy(real, digits.test)


def test_openvino_int8_with_nncf(files, digits, tmp_path):
    core = ov.Core()
    quantized = openvino_backend.run(core.read_model(str(files["digits.onnx"])), digits.validation)
    assert "FakeQuantize" in {op.get_type_name() for op in quantized.get_ops()}
    compiled = core.compile_model(quantized, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    logits = compiled(digits.test.inputs)[0]
    assert np.mean(logits.argmax(1) == digits.test.labels) >= accuracy(files["digits.onnx"], digits.test) - 0.01
