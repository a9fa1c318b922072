"""Dynamic INT8, FP16 and weight-only INT8/INT4 passes, and NNCF's transformer scheme: real graphs,
run in their runtimes, fidelity to FP32 kept. MatMul cases use a small transformer with random weights."""

import warnings
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import openvino as ov
import pytest
import torch
from int8_kernels import int8_saturates
from onnx import TensorProto, numpy_helper
from torch import nn

from edgeml.compress.quantize import Int8Config, WeightOnlyConfig, float16, onnxruntime_backend, openvino_backend
from edgeml.inputs.data import Dataset
from edgeml.targets.cpu import summarize


class Encoder(nn.Module):
    """Two encoder layers (d_model 64, 4 heads, FFN 256), mean-pooled into 10 logits."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(*[nn.TransformerEncoderLayer(64, 4, 256, dropout=0.0, batch_first=True)
                                      for _ in range(2)])
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.layers(x).mean(1))


@pytest.fixture(scope="module")
def transformer(tmp_path_factory):
    """The encoder with random weights as ONNX, batch dynamic."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("transformer") / "transformer.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Encoder().eval(), (torch.randn(2, 16, 64),), str(path), dynamo=False,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}})
    return path


@pytest.fixture(scope="module")
def sequences():
    rng = np.random.default_rng(0)
    return {"input": rng.standard_normal((64, 16, 64)).astype(np.float32)}


def ort_outputs(path, feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def ov_outputs(model, feeds, hint="f32"):
    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint})(feeds)[0]


def cosine(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def ops(path):
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def int8_weights(path) -> list[np.ndarray]:
    return [numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer if i.data_type == TensorProto.INT8]


# Both INT8 schemes (edgeml.measure.cpu_features.int8_scheme), whatever this machine's CPU: avoid_saturation for x86
# CPUs without VNNI (7-bit weights, reduce_range), the full 8-bit range for VNNI, AMX and Arm. Their fidelity is
# what this CPU's kernels compute.
@pytest.mark.kernels
@pytest.mark.parametrize("avoid_saturation", [False, True], ids=["full-range", "avoid-saturation"])
def test_dynamic_int8_quantizes_the_weight_matmuls(transformer, sequences, tmp_path, avoid_saturation):
    out = onnxruntime_backend.run_dynamic(transformer, tmp_path / "dynamic.onnx",
                                          Int8Config(avoid_saturation=avoid_saturation))
    found = ops(out)
    weights = len(summarize(transformer).weights)           # 2 x (in-proj, out-proj, FFN 1, FFN 2) + head
    assert weights == 9 and found["MatMulInteger"] == weights and found["DynamicQuantizeLinear"] >= 1
    assert found["MatMul"] == 4                              # attention scores and context: two activations
    int8 = int8_weights(out)
    assert sum(w.size for w in int8) > 100_000
    # 7 bits: |w| <= 64, so u8 x s8 pairs sum to at most 2 * 255 * 64 < 32767 (no VPMADDUBSW saturation)
    widest = max(int(np.abs(w.astype(np.int32)).max()) for w in int8)
    assert widest <= 64 if avoid_saturation else widest > 64
    assert out.stat().st_size < transformer.stat().st_size / 2
    fidelity = cosine(ort_outputs(out, sequences), ort_outputs(transformer, sequences))
    if avoid_saturation or not int8_saturates():
        assert fidelity > 0.999
    else:       # full-range pairs saturate in VPMADDUBSW (x86 without VNNI/AMX): what 7-bit weights avoid
        seven = onnxruntime_backend.run_dynamic(transformer, tmp_path / "7-bit.onnx", Int8Config(avoid_saturation=True))
        assert 0.98 < fidelity < cosine(ort_outputs(seven, sequences), ort_outputs(transformer, sequences))


def test_fp16_halves_the_weights_and_keeps_float32_io(files, digits, transformer, sequences, tmp_path):
    cnn = float16.run(files["digits.onnx"], tmp_path / "cnn.onnx")
    graph = onnx.load(str(cnn)).graph
    types = Counter(i.data_type for i in graph.initializer)
    assert types[TensorProto.FLOAT16] >= 10 and types[TensorProto.FLOAT] == 0
    assert {v.type.tensor_type.elem_type for v in [*graph.input, *graph.output]} == {TensorProto.FLOAT}
    assert cnn.stat().st_size < files["digits.onnx"].stat().st_size * 0.55

    def accuracy(path):
        return np.mean(ort_outputs(path, digits.test.inputs).argmax(1) == digits.test.labels)
    assert accuracy(cnn) >= accuracy(files["digits.onnx"]) - 0.01

    encoder = float16.run(transformer, tmp_path / "transformer.onnx")
    assert cosine(ort_outputs(encoder, sequences), ort_outputs(transformer, sequences)) > 0.999


def test_int4_weights_become_matmulnbits(transformer, sequences, tmp_path):
    out = onnxruntime_backend.run_weight_only(transformer, tmp_path / "int4.onnx", WeightOnlyConfig(bits=4))
    nodes = [n for n in onnx.load(str(out)).graph.node if n.op_type == "MatMulNBits"]
    matmul_weights = [k for op, k in summarize(transformer).weights if op == "MatMul"]
    assert len(nodes) == len(matmul_weights) == 6
    attributes = {a.name: a.i for a in nodes[0].attribute}
    assert attributes["bits"] == 4 and attributes["block_size"] == 128
    assert ops(out)["MatMul"] == 4                           # only the two-activation MatMuls are left
    assert out.stat().st_size < transformer.stat().st_size / 2
    assert cosine(ort_outputs(out, sequences), ort_outputs(transformer, sequences)) > 0.99


@pytest.mark.parametrize("bits, element", [(8, ov.Type.u8), (4, ov.Type.i4)], ids=["int8", "int4"])
def test_openvino_weight_compression(transformer, sequences, bits, element):
    fp32 = ov.Core().read_model(str(transformer))
    compressed = openvino_backend.run_weight_only(ov.Core().read_model(str(transformer)), WeightOnlyConfig(bits=bits))
    constants = Counter(op.get_output_element_type(0) for op in compressed.get_ops()
                        if op.get_type_name() == "Constant")
    assert constants[element] >= 6
    assert "FakeQuantize" not in {op.get_type_name() for op in compressed.get_ops()}      # activations stay float
    assert cosine(ov_outputs(compressed, sequences), ov_outputs(fp32, sequences)) > 0.99


def test_openvino_int8_transformer_scheme(transformer, sequences):
    core = ov.Core()
    calibration = Dataset(sequences, None, "random sequences")
    quantized = openvino_backend.run(core.read_model(str(transformer)), calibration, transformer=True)
    names = [op.get_friendly_name() for op in quantized.get_ops()]
    assert any("nncf_smooth_quant" in n for n in names)                 # SmoothQuant ran first
    assert "FakeQuantize" in {op.get_type_name() for op in quantized.get_ops()}
    # Random weights are a hard case for SmoothQuant (no outlier channels to move): ~0.97 here.
    assert cosine(ov_outputs(quantized, sequences), ov_outputs(core.read_model(str(transformer)), sequences)) > 0.95


def test_graph_summary_tells_a_transformer_from_a_cnn(files, transformer):
    cnn, encoder = summarize(files["digits.onnx"]), summarize(transformer)
    assert (cnn.convs, cnn.matmul_heavy, cnn.transformer) == (3, False, False)
    assert (encoder.convs, encoder.matmul_heavy, encoder.transformer) == (0, True, True)
    assert sorted(k for _, k in encoder.weights) == [64] * 7 + [256] * 2
