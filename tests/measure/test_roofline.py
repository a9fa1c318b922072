"""Roofline prediction: MACs and bytes of hand-built ONNX graphs, the time model, and measure_host."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeml.measure.roofline import layer_costs, measure_host, predict
from edgeml.profiles import Profile, ProfileError, load_profile


def _model(tmp_path, nodes, inputs, weights=(), opset=18, name="m.onnx"):
    """An ONNX model of `nodes`; `inputs` are (name, shape) float inputs, `weights` (name, array) initializers."""
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.zeros(shape, np.float32), n) for n, shape in weights])
    path = tmp_path / name
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


def _device(**changes) -> Profile:
    """A device with round numbers: 1 GOPS FP32, 4 GOPS INT8, 1 GB/s, efficiency 1, no overhead."""
    device = Profile(name="test", display_name="test device", target="cpu", cpu={"arch": "x86_64"}, gpu=None,
                     runtimes={}, precisions=("fp32", "int8"), dla_cores=0, peak_gops={"fp32": 1.0, "int8": 4.0},
                     memory_bandwidth_gbs=1.0, memory_gb=1.0,
                     efficiency={"compute": 1.0, "memory": 1.0, "layer_overhead_us": 0.0})
    return dataclasses.replace(device, **changes)


def _macs(path) -> list[int]:
    return [c.macs for c in layer_costs(path, "fp32")[0]]


def test_conv_macs(tmp_path):
    conv = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    path = _model(tmp_path, [conv], [("x", [1, 3, 32, 32])], [("w", (16, 3, 3, 3))])
    assert _macs(path) == [16 * 32 * 32 * 3 * 3 * 3]        # every output element: C x kh x kw MACs


def test_depthwise_conv_macs(tmp_path):
    conv = helper.make_node("Conv", ["x", "w"], ["y"], group=8, strides=[2, 2], pads=[1, 1, 1, 1])
    path = _model(tmp_path, [conv], [("x", [1, 8, 16, 16])], [("w", (8, 1, 3, 3))])
    assert _macs(path) == [8 * 8 * 8 * 3 * 3]                # 8x8 outputs per channel, one input channel each


def test_conv_transpose_macs(tmp_path):
    deconv = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2])
    path = _model(tmp_path, [deconv], [("x", [1, 4, 5, 5])], [("w", (4, 2, 3, 3))])
    assert _macs(path) == [4 * 5 * 5 * 2 * 3 * 3]            # every input element scatters into M x kh x kw


@pytest.mark.parametrize("batch", ["batch", -1])           # PaddlePaddle writes -1 for any size
def test_gemm_macs_with_a_dynamic_batch_set_to_one(tmp_path, batch):
    gemm = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
    path = _model(tmp_path, [gemm], [("x", [batch, 64])], [("w", (10, 64)), ("b", (10,))])
    assert _macs(path) == [64 * 10]


def test_batched_matmul_of_two_activations(tmp_path):
    matmul = helper.make_node("MatMul", ["a", "b"], ["y"])
    path = _model(tmp_path, [matmul], [("a", [2, 4, 16, 32]), ("b", [2, 4, 32, 8])])
    assert _macs(path) == [2 * 4 * 16 * 8 * 32]


def test_attention_macs(tmp_path):
    attention = helper.make_node("Attention", ["q", "k", "v"], ["y"])
    path = _model(tmp_path, [attention], [("q", [1, 2, 4, 8]), ("k", [1, 2, 6, 8]), ("v", [1, 2, 6, 8])], opset=23)
    assert _macs(path) == [2 * 4 * 6 * 8 * 2]                 # per head: Q.K^T (4x6x8) and weights.V (4x6x8)


def test_bytes_follow_the_precision(tmp_path):
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["y"])]
    path = _model(tmp_path, nodes, [("x", [1, 64])], [("w", (10, 64)), ("b", (10,))])
    gemm_elements = 64 + 640 + 10 + 10               # input, weight, bias, output
    relu_elements = 10 + 10
    for precision, gemm_bytes, relu_bytes in (("fp32", 4, 4), ("fp16", 2, 2), ("bf16", 2, 2), ("int8", 1, 4)):
        gemm, relu = layer_costs(path, precision)[0]
        assert (gemm.bytes, relu.bytes) == (gemm_elements * gemm_bytes, relu_elements * relu_bytes), precision


def test_views_and_constant_subgraphs_cost_nothing(tmp_path):
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["flat"]),
             helper.make_node("Mul", ["w", "w"], ["w2"]),            # constant: folded by the runtime
             helper.make_node("MatMul", ["flat", "w2"], ["y"])]
    path = _model(tmp_path, nodes, [("x", [1, 4, 4])], [("w", (16, 8))])
    model = onnx.load(str(path))
    model.graph.initializer.append(shape)
    onnx.save(model, str(path))
    costs, unknown = layer_costs(path, "fp32")
    assert [c.op for c in costs] == ["MatMul"] and costs[0].macs == 16 * 8 and unknown == 0


def test_compute_bound_layer_is_faster_in_int8(tmp_path):
    matmul = helper.make_node("MatMul", ["x", "w"], ["y"])
    path = _model(tmp_path, [matmul], [("x", [64, 64])], [("w", (64, 64))])
    fp32 = predict(path, _device(), "fp32")
    int8 = predict(path, _device(), "int8")
    assert fp32.layers[0].bound == int8.layers[0].bound == "compute"
    assert fp32.ms == pytest.approx(2 * 64**3 / 1e9 * 1e3)     # 2 x MACs / 1 GOPS
    assert int8.ms == pytest.approx(fp32.ms / 4)
    assert fp32.macs == 64**3 and fp32.bytes == 3 * 64 * 64 * 4 and int8.bytes == 3 * 64 * 64


def test_memory_bound_layer_takes_bytes_over_bandwidth(tmp_path):
    path = _model(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], [("x", [1, 1000])])
    prediction = predict(path, _device(memory_bandwidth_gbs=2.0), "fp32")
    layer = prediction.layers[0]
    assert layer.bound == "memory" and layer.macs == 0 and layer.bytes == 8000
    assert prediction.ms == pytest.approx(8000 / 2e9 * 1e3)


def test_efficiency_and_layer_overhead(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    path = _model(tmp_path, nodes, [("x", [1, 1000])])
    base = predict(path, _device(), "fp32").ms
    slow = predict(path, _device(efficiency={"compute": 1.0, "memory": 0.5, "layer_overhead_us": 5.0}), "fp32")
    assert slow.ms == pytest.approx(2 * base + 2 * 0.005)


def test_unsupported_precision_raises_and_mixed_is_predicted_as_int8(tmp_path):
    path = _model(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], [("x", [1, 10])])
    with pytest.raises(ProfileError, match="no fp16 compute path"):
        predict(path, _device(), "fp16")
    with pytest.raises(ProfileError, match="no int8 compute path"):
        predict(path, _device(precisions=("fp32",), peak_gops={"fp32": 1.0}), "int8")
    mixed = predict(path, _device(), "int8+fp32")
    assert mixed.precision == "int8" and any("int8+fp32 predicted as int8" in n for n in mixed.notes)


def test_bundled_profile_prediction_uses_the_threads(tmp_path):
    matmul = helper.make_node("MatMul", ["x", "w"], ["y"])
    path = _model(tmp_path, [matmul], [("x", [256, 256])], [("w", (256, 256))])
    server = load_profile("x86-avx512-server")
    one, eight = predict(path, server, "fp32", threads=1), predict(path, server, "fp32", threads=8)
    assert one.ms > eight.ms > 0 and one.threads == 1
    assert "1 thread(s) on 1 of the device's 96 cores" in one.notes
    d = one.to_dict()
    assert d["profile"] == "x86-avx512-server" and d["layers"][0]["op"] == "MatMul"
    assert "assumptions" in " ".join(predict(path, load_profile("jetson-orin-nano"), "fp16").notes)


def test_measure_host_returns_positive_numbers(tmp_path):
    host = measure_host(1, size=128, copy_mb=8, repeats=1)
    assert host.name == "host" and host.target == "cpu" and host.efficiency["compute"] == 1.0
    assert {"fp32", "int8"} <= set(host.precisions)
    assert all(v > 0 for v in host.peak_gops.values()) and host.memory_bandwidth_gbs > 0
    path = _model(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], [("x", [1, 10])])
    assert predict(path, host, "int8", threads=1).ms > 0
