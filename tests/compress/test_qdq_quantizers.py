"""The quantizers of an ONNX Runtime QDQ model (edgeml.compress.quantize.qdq_quantizers), on the digits CNN quantized
by onnxruntime.quantization: listed, reverted to float, and switched in one session."""

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgeml.compress.quantize import Int8Config, qdq_quantizers
from edgeml.compress.quantize import onnxruntime_backend as ort_quant


@pytest.fixture(scope="module")
def built(digits, tmp_path_factory):
    """(the float model, its INT8 QDQ build)."""
    folder = tmp_path_factory.mktemp("qdq")
    source = folder / "digits.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(digits.model, (torch.from_numpy(digits.validation.inputs["input"][:2]),), str(source),
                          dynamo=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}})
    return source, ort_quant.run(source, folder / "int8.onnx", digits.validation, Int8Config())


def outputs(model, x):
    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def ops(model) -> list[str]:
    return [n.op_type for n in onnx.load(str(model)).graph.node]


def test_each_range_is_one_quantizer_weights_are_quantizers_biases_are_not(built):
    source, int8 = built
    listed = dict(qdq_quantizers.listed(int8, source))
    graph = onnx.load(str(int8)).graph
    scales = {n.input[1] for n in graph.node if n.op_type == "QuantizeLinear"}
    activations = {name: what for name, what in listed.items() if not what.startswith("weight")}
    # a MaxPool's or Flatten's output is re-quantized with its input's scale: part of its input's quantizer
    assert len(activations) == len(scales) < sum(n.op_type == "QuantizeLinear" for n in graph.node)
    assert activations["input"] == "input 'input'" and "output 'logits'" in activations.values()
    assert not any("MaxPool" in what or "Flatten" in what for what in activations.values())
    weights = {name for name, what in listed.items() if what.startswith("weight")}
    assert weights == {t.name for t in onnx.load(str(source)).graph.initializer if t.name.endswith("weight")}


def test_reverting_every_quantizer_gives_the_float_model_with_the_dropped_relus_back(built, digits, tmp_path):
    source, int8 = built
    names = [name for name, _ in qdq_quantizers.listed(int8, source)]
    assert ops(int8).count("Relu") < ops(source).count("Relu")         # the quantizer dropped them: Q/DQ clamps
    reverted = qdq_quantizers.revert(int8, source, names, tmp_path / "float.onnx")
    assert not {"QuantizeLinear", "DequantizeLinear"} & set(ops(reverted))
    assert ops(reverted).count("Relu") == ops(source).count("Relu")
    x = digits.test.inputs["input"]
    np.testing.assert_allclose(outputs(reverted, x), outputs(source, x), rtol=1e-5, atol=1e-5)


def test_reverting_one_range_keeps_the_rest_in_int8(built, digits, tmp_path):
    source, int8 = built
    relu = next(name for name, what in qdq_quantizers.listed(int8, source) if what.startswith("output of Conv"))
    reverted = qdq_quantizers.revert(int8, source, [relu], tmp_path / "one.onnx")
    graph = onnx.load(str(reverted)).graph
    quantized = {n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    assert relu not in quantized and len(quantized) == sum(op == "QuantizeLinear" for op in ops(int8)) - 1
    assert ops(reverted).count("Relu") == ops(int8).count("Relu") + 1
    # the Conv before it now computes in float: its weight and bias are float initializers, not dequantized on
    # every run
    conv = next(n for n in graph.node if f"{relu}_unclamped" in n.output)
    assert {i for i in conv.input[1:]} <= {t.name for t in graph.initializer}
    with pytest.raises(ValueError, match="not a quantizer of int8.onnx: nope"):
        qdq_quantizers.revert(int8, source, [relu, "nope"], tmp_path / "bad.onnx")


def test_the_switchable_model_runs_the_build_or_any_quantizer_reverted(built, digits, tmp_path):
    source, int8 = built
    names = [name for name, _ in qdq_quantizers.listed(int8, source)]
    run = qdq_quantizers.switchable(int8, source, names)
    x = digits.test.inputs["input"]
    feeds = {"input": x}

    def relative(a, b):
        return np.linalg.norm(a - b) / np.linalg.norm(b)
    # all quantized: the INT8 build, simulated in float (this CPU's int8 kernels may round differently)
    assert relative(run(feeds, np.zeros(len(names), bool))[0], outputs(int8, x)) < 0.02
    # each one switched: as the build with it reverted, simulated
    for k in (names.index("input"), len(names) - 1):
        mask = np.zeros(len(names), bool)
        mask[k] = True
        alone = qdq_quantizers.revert(int8, source, [names[k]], tmp_path / f"alone-{k}.onnx")
        assert relative(run(feeds, mask)[0], outputs(alone, x)) < 0.02
    # all reverted: the float model, but for the biases (int32, with the quantized input's scale)
    assert relative(run(feeds, np.ones(len(names), bool))[0], outputs(source, x)) < 1e-3
