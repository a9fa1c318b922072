"""Dynamic INT8 (onnxruntime quantize_dynamic) within an accuracy budget: the layers it quantizes, and the search
that keeps some of them in float when it breaks the budget."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from edgeml.compress.quantize import Int8Config
from edgeml.compress.quantize import onnxruntime_backend as ort_quant
from edgeml.runtimes.onnxruntime import OrtRunner

# What quantize_dynamic leaves in a graph where it quantized something.
INTEGER_OPS = {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeLSTM", "ConvInteger", "DequantizeLinear",
               "DynamicQuantizeMatMul"}
STEPS, H = 16, 16


@pytest.fixture(scope="module")
def mixed_graph(tmp_path_factory):
    """An embedding, a projection, attention-like MatMuls of two activations, an LSTM and a GRU side by side, and a
    Gemm head (transB): every kind of node quantize_dynamic quantizes, and some it leaves in float."""
    rng = np.random.default_rng(0)

    def weight(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["embedded"], name="embed"),
        helper.make_node("MatMul", ["embedded", "w_proj"], ["a"], name="proj"),
        helper.make_node("Transpose", ["a"], ["a_t"], name="transpose", perm=[1, 0]),
        helper.make_node("MatMul", ["a", "a_t"], ["scores"], name="scores"),
        helper.make_node("MatMul", ["scores", "a"], ["mixed"], name="mix"),
        helper.make_node("Unsqueeze", ["mixed", "axis1"], ["sequence"], name="unsqueeze"),
        helper.make_node("LSTM", ["sequence", "W", "R", "B"], ["y", "h"], name="lstm", hidden_size=H),
        helper.make_node("GRU", ["sequence", "W_gru", "R_gru"], ["y_gru", "h_gru"], name="gru", hidden_size=H),
        helper.make_node("Concat", ["h", "h_gru"], ["both"], name="concat", axis=2),
        helper.make_node("Reshape", ["both", "flat"], ["hidden"], name="reshape"),
        helper.make_node("Gemm", ["hidden", "w_head", "b_head"], ["out"], name="head", transB=1),
    ]
    constants = [weight("table", 20, 8), weight("w_proj", 8, 8), weight("W", 1, 4 * H, 8), weight("R", 1, 4 * H, H),
                 weight("B", 1, 8 * H), weight("W_gru", 1, 3 * H, 8), weight("R_gru", 1, 3 * H, H),
                 weight("w_head", 3, 2 * H), weight("b_head", 3),
                 numpy_helper.from_array(np.array([1], np.int64), "axis1"),
                 numpy_helper.from_array(np.array([1, 2 * H], np.int64), "flat")]
    graph = helper.make_graph(nodes, "mixed", [helper.make_tensor_value_info("ids", TensorProto.INT64, [5])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3])], constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    path = tmp_path_factory.mktemp("dynamic") / "mixed.onnx"
    onnx.save(model, str(path))
    return path


def integer_ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node if n.op_type in INTEGER_OPS]


def test_dynamic_layers_are_the_nodes_quantize_dynamic_quantizes(mixed_graph, tmp_path):
    layers = ort_quant.dynamic_layers(mixed_graph)
    # MatMuls of two activations, the GRU (no IntegerOps quantizer) and the Transpose (it follows its input) stay out
    assert layers == [("embed", "Gather"), ("proj", "MatMul"), ("lstm", "LSTM"), ("head", "Gemm")]
    names = tuple(name for name, _ in layers)
    ids = {"ids": np.array([1, 4, 7, 2, 19])}
    original = OrtRunner(mixed_graph, 1).run(ids)[0]

    every = ort_quant.run_dynamic(mixed_graph, tmp_path / "float.onnx", Int8Config(exclude=names))
    assert integer_ops(every) == []                                           # all listed in float: the float model
    np.testing.assert_allclose(OrtRunner(every, 1).run(ids)[0], original, rtol=1e-5, atol=1e-6)
    for name in names:                                   # each one alone in INT8 is quantized (the Gemm as a MatMul)
        alone = ort_quant.run_dynamic(mixed_graph, tmp_path / f"{name}.onnx",
                                      Int8Config(exclude=tuple(n for n in names if n != name)))
        assert integer_ops(alone), name


class Encoder(nn.Module):
    """Two LSTM layers over a sequence of sensor readings, and a linear head on the last step."""

    def __init__(self, features: int, hidden: int):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, 2, batch_first=True)
        self.head = nn.Linear(hidden, 2 * features)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.head(y[:, -1])


def readings(count: int, features: int, generator) -> torch.Tensor:
    """Noisy sine waves, one per feature, of random frequency and phase: [count, STEPS, features]."""
    frequency = torch.rand(count, features, 1, generator=generator) * 0.5 + 0.1
    phase = torch.rand(count, features, 1, generator=generator) * 6.28
    x = torch.sin(frequency * torch.arange(STEPS).float() + phase).transpose(1, 2)
    return x + 0.1 * torch.randn(x.shape, generator=generator)


@pytest.fixture(scope="module")
def raw_channel_encoder(tmp_path_factory):
    """An LSTM encoder trained on normalized readings whose channel 0 then arrives unnormalized (1000x), its first
    layer's input weights scaled down to match: the same function in float. Quantized at run time, the one range
    of each input tensor crushes the other channels of the first LSTM's input, and its weights for channel 0
    round to zero; the second LSTM and the head read ordinary activations. Returns (model, calibration .npz,
    evaluation .npz)."""
    features, raw = 8, 1000.0
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = Encoder(features, 256)          # wide enough for INT8 LSTM kernels to pay off over float
    x = readings(256, features, generator)
    target = torch.cat([x.mean(1), x[:, -1]], 1)          # each channel's mean and last value
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    first = None
    for _ in range(10):
        batch = torch.randint(0, len(x), (16,), generator=generator)
        loss = ((model(x[batch]) - target[batch]) ** 2).mean()
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < first                                    # it learned something
    model.eval()
    data = readings(160, features, generator)
    with torch.no_grad():
        reference = model(data)
        model.lstm.weight_ih_l0[:, 0] /= raw
        data[:, :, 0] *= raw
        assert torch.allclose(model(data), reference, atol=1e-4)
    folder = tmp_path_factory.mktemp("raw-channel")
    np.savez(folder / "calib.npz", x=data[:80].numpy())
    np.savez(folder / "eval.npz", x=data[80:].numpy())
    return model, folder / "calib.npz", folder / "eval.npz"


def test_dynamic_int8_over_the_budget_keeps_the_sensitive_lstm_in_float(raw_channel_encoder, tmp_path):
    import edgeml

    model, calibration, evaluation = raw_channel_encoder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = edgeml.optimize(model, input_shapes=[f"x:1x{STEPS}x8"], target="cpu", precision="int8",
                              quantizer="ort", metric="cosine", max_accuracy_drop=0.01, calib_data=calibration,
                              eval_data=evaluation, out=tmp_path / "out", measure_seconds=0.05, threads=1,
                              cache=False)
    rows = {r.name: r for r in run.rows}
    plain = rows["onnxruntime-int8-dynamic"]
    assert plain.status == "ok" and plain.quality_drop > 0.01                 # over the budget: searched
    tuning = run.tuning["onnxruntime-int8-dynamic"]
    assert "reason" not in tuning, tuning.get("reason")                      # not skipped, not failed
    sensitivity = {s["layer"]: s for s in tuning["sensitivity"]}
    assert [s["op"] for s in tuning["sensitivity"]] == ["LSTM", "LSTM", "Gemm"]   # one build per layer
    first_lstm = tuning["sensitivity"][0]["layer"]
    assert max(sensitivity, key=lambda name: sensitivity[name]["drop_when_only_this_is_int8"]) == first_lstm
    # the first LSTM first; how many more the budget needs depends on the trained weights (the test machine's threads)
    kept = list(tuning["best"]["excluded"])
    assert tuning["met"] and kept[0] == first_lstm and len(kept) < len(sensitivity)
    assert len(tuning["trials"]) >= 2 + len(sensitivity)      # all INT8, all float, one per layer, the fallback
    assert tuning["row"] == "onnxruntime-int8-dynamic-mixed"

    mixed = rows["onnxruntime-int8-dynamic-mixed"]
    assert mixed.status == "ok" and mixed.precision == "int8+fp32" and first_lstm in mixed.method
    assert mixed.quality_drop < plain.quality_drop and mixed.quality_drop <= 0.01
    report = (tmp_path / "out" / "report.json").read_text()
    assert "onnxruntime-int8-dynamic-mixed" in report and "sensitivity: only" in report
