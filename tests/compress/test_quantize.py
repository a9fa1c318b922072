"""INT8 passes on the digits CNN: real graphs, real calibration, accuracy kept."""

import numpy as np
import onnx
import onnxruntime as ort
import openvino as ov
import pytest
from onnx import TensorProto, numpy_helper

from edgeml.compress.quantize import Int8Config, onnxruntime_backend, openvino_backend
from edgeml.inputs.data import random_dataset
from edgeml.inputs.specs import TensorSpec


def accuracy(model_path, dataset):
    logits = ort.InferenceSession(str(model_path)).run(None, dataset.inputs)[0]
    return float(np.mean(logits.argmax(1) == dataset.labels))


def scales(path):
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer
            if i.name.endswith("_scale")}


# Both INT8 schemes (edgeml.measure.cpu_features.int8_scheme), whatever this machine's CPU; the accuracy is what this
# CPU's kernels compute.
@pytest.mark.kernels
@pytest.mark.parametrize("avoid_saturation", [False, True], ids=["full-range", "avoid-saturation"])
def test_onnxruntime_int8_is_qdq_per_channel_and_keeps_accuracy(files, digits, tmp_path, avoid_saturation):
    out = onnxruntime_backend.run(files["digits.onnx"], tmp_path / "int8.onnx", digits.validation,
                                  Int8Config(avoid_saturation=avoid_saturation))
    graph = onnx.load(str(out)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") >= 5 and ops.count("DequantizeLinear") >= 10
    per_channel = [s for s in scales(out).values() if s.ndim == 1 and s.size > 1]
    assert {s.size for s in per_channel} == {10, 32, 64, 128}       # one scale per output channel
    weights = [numpy_helper.to_array(i).astype(np.int32) for i in graph.initializer
               if i.data_type == TensorProto.INT8 and len(i.dims) >= 2]  # Conv/Gemm weights, not zero points
    assert len(weights) == 5
    widest = max(int(np.abs(w).max()) for w in weights)
    assert widest <= 64 if avoid_saturation else widest > 64          # 7-bit weights when avoiding saturation
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


@pytest.mark.parametrize("avoid_saturation", [False, True], ids=["full-range", "avoid-saturation"])
def test_openvino_int8_with_nncf(files, digits, tmp_path, avoid_saturation):
    core = ov.Core()
    quantized = openvino_backend.run(core.read_model(str(files["digits.onnx"])), digits.validation,
                                     Int8Config(avoid_saturation=avoid_saturation))
    assert "FakeQuantize" in {op.get_type_name() for op in quantized.get_ops()}
    # NNCF stores the weights as int8 constants; its overflow fix halves the range of the first Conv's only.
    weights = {tuple(op.get_output_shape(0)): int(np.abs(op.get_data().astype(np.int32)).max())
               for op in quantized.get_ops()
               if op.get_type_name() == "Constant" and op.get_output_element_type(0) == ov.Type.i8}
    first = weights.pop((32, 1, 3, 3))                      # the Conv that reads the 1-channel image
    assert first <= 64 if avoid_saturation else first > 64
    assert len(weights) == 4 and min(weights.values()) > 64   # the other layers keep the full 8-bit range
    compiled = core.compile_model(quantized, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    logits = compiled(digits.test.inputs)[0]
    assert np.mean(logits.argmax(1) == digits.test.labels) >= accuracy(files["digits.onnx"], digits.test) - 0.01
