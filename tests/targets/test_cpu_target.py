"""The CPU target's candidates, built and run for real, on a CNN and on a transformer."""

import warnings

import numpy as np
import onnxruntime as ort
import pytest

from edgeml.inputs.data import Dataset
from edgeml.measure import cpu_features
from edgeml.measure.evaluate import predict
from edgeml.runtimes import BACKENDS
from edgeml.targets import TARGETS, get_target
from edgeml.targets.base import BuildContext

# For transformers and RNNs: their `applies` turns a CNN down.
MATMUL_ONLY = {"onnxruntime-int8-dynamic", "onnxruntime-int4-weights", "openvino-int8-weights", "openvino-int4-weights"}
# Run with OpenVINO's bf16 precision hint: built only where edgeml.measure.cpu_features finds BF16 instructions.
BF16_HINT = {"openvino-bf16", "openvino-int8-bf16"}


def test_every_cpu_candidate_builds_and_runs(files, digits, tmp_path):
    reference = ort.InferenceSession(str(files["digits.onnx"])).run(None, digits.test.inputs)[0]
    reference_accuracy = np.mean(reference.argmax(1) == digits.test.labels)
    context = BuildContext(calibration=digits.validation)
    cpu = get_target("cpu")
    assert [c.name for c in cpu.candidates] == [
        "onnxruntime-fp32", "onnxruntime-int8", "onnxruntime-int8-dynamic", "onnxruntime-fp16",
        "onnxruntime-int4-weights", "openvino-fp32", "openvino-int8", "openvino-bf16", "openvino-int8-bf16",
        "openvino-int8-weights", "openvino-int4-weights", "torch-int8-inc"]
    for candidate in cpu.candidates:
        assert candidate.missing() == []
        if candidate.opt_in:                # built from the PyTorch model: tests/compress/test_quantize_inc.py
            continue
        reason = candidate.applies(files["digits.onnx"]) if candidate.applies else None
        if candidate.name in MATMUL_ONLY or (candidate.name in BF16_HINT and not cpu_features.has_bf16()):
            assert reason
            continue
        assert reason is None
        artifact = candidate.build(files["digits.onnx"], tmp_path / candidate.name, context)
        assert (artifact.folder / artifact.entry).is_file() and artifact.size_bytes > 0
        out = predict(candidate.backend.open(artifact, 1), digits.test, 32)[0]
        if candidate.precision == "fp32":
            # f32 hint: OpenVINO must not quietly run in bf16 on CPUs that have it.
            np.testing.assert_allclose(out, reference, atol=1e-4, rtol=1e-4)
        else:
            assert np.mean(out.argmax(1) == reference.argmax(1)) > 0.97
            assert np.mean(out.argmax(1) == digits.test.labels) >= reference_accuracy - 0.01


@pytest.fixture(scope="module")
def transformer(tmp_path_factory):
    """Two encoder layers (d_model 64, 4 heads, FFN 256) with random weights, as ONNX, batch dynamic."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(*[nn.TransformerEncoderLayer(64, 4, 256, dropout=0.0, batch_first=True)
                            for _ in range(2)]).eval()
    path = tmp_path_factory.mktemp("transformer") / "transformer.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(2, 16, 64),), str(path), dynamo=False, input_names=["input"],
                          output_names=["hidden"], dynamic_axes={"input": {0: "n"}, "hidden": {0: "n"}})
    return path


def test_every_cpu_candidate_suits_a_transformer(transformer, tmp_path):
    rng = np.random.default_rng(0)
    calibration, evaluation = (Dataset({"input": rng.standard_normal((32, 16, 64)).astype(np.float32)}, None, role)
                               for role in ("calibration", "evaluation"))
    reference = ort.InferenceSession(str(transformer)).run(None, evaluation.inputs)[0].ravel()
    context = BuildContext(calibration=calibration)
    for candidate in get_target("cpu").candidates:
        if candidate.opt_in:
            continue
        reason = candidate.applies(transformer) if candidate.applies else None
        if candidate.name in BF16_HINT and not cpu_features.has_bf16():
            assert reason
            continue
        assert reason is None, candidate.name
        artifact = candidate.build(transformer, tmp_path / candidate.name, context)
        out = predict(candidate.backend.open(artifact, 1), evaluation, 16)[0].ravel()
        cosine = out @ reference / np.linalg.norm(out) / np.linalg.norm(reference)
        # NNCF's transformer scheme starts with SmoothQuant, which random weights (no outlier channels) do not favour.
        assert cosine > (0.95 if candidate.name.startswith("openvino-int8") else 0.99), (candidate.name, cosine)


# The hardware, not $EDGEML_CPU_FEATURES: OpenVINO runs bf16 only where the instructions exist.
@pytest.mark.skipif(not cpu_features.has_bf16(cpu_features.detected() or frozenset()),
                    reason="this CPU has no BF16 instructions")
def test_openvino_bf16_runs_in_bf16(files, digits, tmp_path):
    candidate = next(c for c in get_target("cpu").candidates if c.name == "openvino-bf16")
    artifact = candidate.build(files["digits.onnx"], tmp_path, BuildContext(calibration=digits.validation))
    assert artifact.runtime_config["INFERENCE_PRECISION_HINT"] == "bf16"
    runtime = candidate.backend.open(artifact, 1).request.get_compiled_model().get_runtime_model()
    precisions = {op.get_rt_info()["runtimePrecision"].astype(str) for op in runtime.get_ops()}
    assert "bf16" in precisions


@pytest.mark.parametrize("name", sorted(BF16_HINT))
def test_the_bf16_hint_applies_only_where_the_cpu_has_bf16(name, files):
    """As edgeml.measure.cpu_features sees this CPU: built where BF16 is native, else skipped and why."""
    candidate = next(c for c in get_target("cpu").candidates if c.name == name)
    reason = candidate.applies(files["digits.onnx"])
    if cpu_features.has_bf16():
        assert reason is None
    else:
        assert reason == cpu_features.missing_bf16() and reason


# The hardware, not $EDGEML_CPU_FEATURES: OpenVINO runs bf16 only where the instructions exist.
@pytest.mark.skipif(not cpu_features.has_bf16(cpu_features.detected() or frozenset()),
                    reason="this CPU has no BF16 instructions")
def test_openvino_int8_bf16_runs_its_float_ops_in_bf16(files, digits, tmp_path):
    candidate = next(c for c in get_target("cpu").candidates if c.name == "openvino-int8-bf16")
    artifact = candidate.build(files["digits.onnx"], tmp_path, BuildContext(calibration=digits.validation))
    assert artifact.precision == "int8" and artifact.runtime_config["INFERENCE_PRECISION_HINT"] == "bf16"
    compiled = candidate.backend.open(artifact, 1).request.get_compiled_model()
    assert compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "bf16"
    precisions = {op.get_rt_info()["runtimePrecision"].astype(str) for op in compiled.get_runtime_model().get_ops()}
    assert precisions & {"u8", "i8"}                      # still the INT8 IR


def test_registry():
    assert set(TARGETS) == {"cpu", "mobile", "jetson", "gpu"}
    # Every runtime serves a target, and every target's runtimes are the registered ones.
    used = [c.backend for t in TARGETS.values() for c in t.candidates] + [
        c.check_with for t in TARGETS.values() for c in t.candidates if c.check_with]
    assert {b.name for b in used} == set(BACKENDS)
    assert all(BACKENDS[b.name] is b for b in used)
    assert BACKENDS["openvino"].extra == "edgeml[cpu]"


def test_precision_int8_leaves_out_the_candidates_whose_float_parts_run_in_bf16():
    from edgeml.pipeline.candidates import candidates_for
    from edgeml.pipeline.recipe import Recipe

    cpu = get_target("cpu")
    int8 = {c.name for c in candidates_for(cpu, Recipe(precision="int8"))}
    assert "openvino-int8" in int8 and "onnxruntime-int8" in int8 and "openvino-int8-bf16" not in int8
    assert all(c.precision == "int8" for c in cpu.candidates if c.name in int8)
    assert "openvino-int8-bf16" in {c.name for c in candidates_for(cpu, Recipe(precision="auto"))}


def test_the_rules_read_the_layers_inside_an_if(tmp_path):
    """A model whose layers sit in the branches of an If (a VAD switching on its sample rate) is summarized by
    them: two MatMuls with weights in each branch, none at the top level."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeml.targets.cpu import summarize

    def branch(name: str) -> onnx.GraphProto:
        weights = [numpy_helper.from_array(np.ones((8, 8), np.float32), f"{name}_w{i}") for i in range(2)]
        nodes = [helper.make_node("MatMul", ["x", f"{name}_w0"], [f"{name}_h"]),
                 helper.make_node("MatMul", [f"{name}_h", f"{name}_w1"], [f"{name}_y"])]
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT,
                                                                                  [1, 8])], weights)
    node = helper.make_node("If", ["flag"], ["y"], then_branch=branch("then"), else_branch=branch("else"))
    graph = helper.make_graph([node], "vad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8]),
                                              helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])
    path = tmp_path / "if.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    summary = summarize(path)
    assert summary.weights == (("MatMul", 8),) * 4 and summary.matmul_heavy
