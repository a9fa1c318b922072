"""The activation quantizers of an NNCF-quantized OpenVINO model: listed, reverted to float, switched by an input
(edgeml.compress.quantize.fake_quantizers), on the digits CNN quantized by NNCF here and on a small hand-built
graph."""

from __future__ import annotations

import warnings
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("nncf")
ov = pytest.importorskip("openvino")

from heavy_tailed import heavy_tailed_model  # noqa: E402
from int8_kernels import int8_context  # noqa: E402
from openvino import opset13 as ops  # noqa: E402

from edgeml.compress.quantize import fake_quantizers  # noqa: E402
from edgeml.compress.quantize import openvino_backend as ov_quant  # noqa: E402
from edgeml.runtimes.openvino import OpenVinoRunner, convert_onnx, open_artifact, read_onnx  # noqa: E402

F32 = {"INFERENCE_PRECISION_HINT": "f32"}
REVERTED = {**F32, "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}     # how targets.cpu runs a build with reverted quantizers


@pytest.fixture(scope="module")
def digits_int8(digits, tmp_path_factory):
    """(the digits CNN quantized by NNCF as IR, the FP32 model as IR, test inputs)."""
    folder = tmp_path_factory.mktemp("fake-quantizers")
    x = torch.from_numpy(digits.test.inputs["input"][:2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(digits.model, (x,), str(folder / "digits.onnx"), dynamo=False, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}})
    calibration = digits.validation.subset(np.arange(64), "calibration")
    ov.save_model(ov_quant.run(read_onnx(folder / "digits.onnx"), calibration), str(folder / "int8.xml"),
                  compress_to_fp16=False)
    ov.save_model(read_onnx(folder / "digits.onnx"), str(folder / "fp32.xml"), compress_to_fp16=False)
    return folder / "int8.xml", folder / "fp32.xml", {"input": digits.test.inputs["input"]}


def logits(model, feeds, config: dict = F32) -> np.ndarray:
    return ov.Core().compile_model(model, "CPU", config)(feeds).to_tuple()[0]


def fake_quantizes(model) -> int:
    return sum(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def two_outputs(path):
    """x -> FakeQuantize -> Concat with x -> FakeQuantize -> MatMul with a FakeQuantize'd weight: outputs the
    MatMul and the Concat. Two activation quantizers, one weight quantizer (a FakeQuantize of a Constant)."""
    def fq(value, bound: float, name: str):
        return ops.fake_quantize(value, *(ops.constant(np.float32(v)) for v in (-bound, bound, -bound, bound)), 256,
                                 name=name)
    x = ops.parameter([2, 3], np.float32, name="x")
    cat = ops.concat([fq(x, 4.0, "fq_x"), x], 1, name="cat")
    weight = np.random.default_rng(0).uniform(-1, 1, (6, 4)).astype(np.float32)
    mm = ops.matmul(fq(cat, 4.0, "fq_cat"), fq(ops.constant(weight), 1.0, "fq_w"), False, False, name="mm")
    mm.output(0).set_names({"y"})
    cat.output(0).set_names({"z"})
    ov.save_model(ov.Model([ops.result(mm), ops.result(cat)], [x]), str(path), compress_to_fp16=False)
    return path


def test_listed_names_the_activation_quantizers_and_what_they_quantize(tmp_path):
    assert fake_quantizers.listed(two_outputs(tmp_path / "m.xml")) == [
        ("fq_x", "input 'x'"), ("fq_cat", "output of Concat 'cat'")]


def test_listed_on_nncf_int8(digits_int8):
    int8, _, _ = digits_int8
    found = fake_quantizers.listed(int8)
    activations = [op.get_friendly_name() for op in ov.Core().read_model(str(int8)).get_ordered_ops()
                   if op.get_type_name() == "FakeQuantize"]          # NNCF keeps weights as integer constants
    assert [name for name, _ in found] == activations and len(found) >= 4
    assert ("input/fq_output_0", "input 'input'") in found
    assert all(what.startswith("output of Relu '") for name, what in found if name != "input/fq_output_0")


def test_reverting_every_quantizer_leaves_the_int8_weights_only(digits_int8):
    int8, fp32, feeds = digits_int8
    model = ov.Core().read_model(str(int8))
    names = [name for name, _ in fake_quantizers.listed(int8)]
    before = fake_quantizes(model)
    floating = fake_quantizers.reverted(model, names)
    assert fake_quantizes(floating) == 0 and fake_quantizes(model) == before > 0      # the original kept its FQs
    reference, quantized, got = (logits(ov.Core().read_model(str(fp32)), feeds), logits(model, feeds),
                                 logits(floating, feeds))
    # measured: 0.004 against the FP32 model (INT8 weights), 0.032 for the INT8 model; top-1 agreement 1.0
    assert relative(got, reference) < relative(quantized, reference) / 3
    assert (got.argmax(1) == reference.argmax(1)).mean() >= 0.98


def test_reverting_an_unknown_quantizer_names_it(digits_int8):
    int8, _, _ = digits_int8
    model = ov.Core().read_model(str(int8))
    weight = next(op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "Convolution")
    for name in ("no-such-op", weight):
        with pytest.raises(ValueError, match=name) as raised:
            fake_quantizers.reverted(model, [fake_quantizers.listed(int8)[0][0], name])
        assert "\n" not in str(raised.value)
    assert fake_quantizes(model) == len(fake_quantizers.listed(int8))


def test_the_switchable_model_reverts_what_the_mask_says(digits_int8):
    int8, _, feeds = digits_int8
    names = [name for name, _ in fake_quantizers.listed(int8)]
    run = fake_quantizers.switchable(int8, names)
    none = np.zeros(len(names), bool)
    quantized = run(feeds, none)[0]
    # simulated quantizers (f32) against OpenVINO's INT8 kernels: measured relative difference 0.003
    assert relative(quantized, logits(ov.Core().read_model(str(int8)), feeds)) < 0.02
    everything = run(feeds, ~none)[0]
    np.testing.assert_allclose(everything, logits(fake_quantizers.reverted(ov.Core().read_model(str(int8)), names),
                                                  feeds, REVERTED), rtol=1e-5, atol=1e-5)
    singles = [run(feeds, np.arange(len(names)) == i)[0] for i in range(len(names))]
    assert all(np.abs(single - quantized).max() > 1e-2 for single in singles)      # measured: 0.18 at least
    # mask[i] switches names[i]: the same quantizers listed backwards take the mask backwards
    backwards = fake_quantizers.switchable(int8, names[::-1])
    for i, single in enumerate(singles):
        np.testing.assert_array_equal(backwards(feeds, (np.arange(len(names)) == i)[::-1])[0], single)
    with pytest.raises(ValueError, match="no-such-op"):
        fake_quantizers.switchable(int8, ["no-such-op"])


def test_the_switchable_model_returns_the_outputs_in_the_runners_order(tmp_path):
    path = two_outputs(tmp_path / "m.xml")
    feeds = {"x": np.random.default_rng(1).uniform(-5, 5, (2, 3)).astype(np.float32)}
    run = fake_quantizers.switchable(path, ["fq_cat", "fq_x"])
    expected = OpenVinoRunner(path, 1, F32).run(feeds)
    got = run(feeds, np.zeros(2, bool))
    assert [a.shape for a in got] == [a.shape for a in expected] == [(2, 4), (2, 6)]
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    bypassed = run(feeds, np.array([False, True]))                   # the Concat reads x itself: z is x twice
    np.testing.assert_allclose(bypassed[1], np.concatenate([feeds["x"], feeds["x"]], 1), rtol=0, atol=0)
    assert np.abs(got[1][:, :3] - feeds["x"]).max() > 1e-3        # fq_x clips at 4: |x| goes to 5


# The weight quantizers, on the heavy-tailed digits CNN (tests/heavy_tailed.py): two hidden units of the classifier
# scaled 1000x, so in INT8 the hidden Relu's activation range crushes the other units, and the head MatMul's
# per-channel weight range crushes the tiny (/1000) columns that read the two big units.
HEAD = "/classifier/classifier.3/Gemm/WithoutBiases"        # the head MatMul, as OpenVINO names the ONNX Gemm
INTEGER = {"i8", "u8", "i4", "u4"}


@pytest.fixture(scope="module")
def heavy_int8(digits, tmp_path_factory):
    """The heavy-tailed digits CNN: its ONNX export, its float openvino.Model (named as NNCF names it), its NNCF INT8
    model (this CPU's settings) and that as IR, the test inputs and the PyTorch model's outputs on them."""
    folder = tmp_path_factory.mktemp("fake-quantizers-heavy")
    model = heavy_tailed_model(digits)
    x = torch.from_numpy(digits.test.inputs["input"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x[:2],), str(folder / "heavy.onnx"), dynamo=False, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}})
    context = int8_context(digits.validation)
    int8 = ov_quant.run(convert_onnx(folder / "heavy.onnx").model, digits.validation, context.int8)
    ov.save_model(int8, str(folder / "int8.xml"), compress_to_fp16=False)
    with torch.no_grad():
        reference = model(x).numpy()
    return SimpleNamespace(onnx=folder / "heavy.onnx", ir=folder / "int8.xml", int8=int8, context=context,
                           float=ov_quant.stable_names(convert_onnx(folder / "heavy.onnx").model),
                           feeds={"input": digits.test.inputs["input"]}, reference=reference)


def ops_by_name(model) -> dict:
    return {op.get_friendly_name(): op for op in model.get_ordered_ops()}


def integer_source(value) -> bool:
    """Whether the port `value` reads an integer Constant through a decompression chain (Convert, Subtract,
    Multiply): how NNCF stores a quantized weight."""
    node = value.get_node()
    if node.get_type_name() == "Constant":
        return node.get_element_type().get_type_name() in INTEGER
    return node.get_type_name() in ("Convert", "Subtract", "Multiply") and any(
        integer_source(v) for v in node.input_values())


def test_listed_names_a_weight_quantizer_per_integer_weight_given_the_float_model(heavy_int8):
    model = ov.Core().read_model(str(heavy_int8.ir))
    layers = [op for op in model.get_ordered_ops() if op.get_type_name() in ("Convolution", "MatMul")]
    assert len(layers) == 5 and all(integer_source(op.input_value(1)) for op in layers)    # 3 Conv + 2 Gemm
    found = fake_quantizers.listed(heavy_int8.ir, heavy_int8.float)
    weights = [(name, what) for name, what in found if name.endswith(fake_quantizers.WEIGHTS)]
    assert weights == [(f"{op.get_friendly_name()}/weights",
                        f"weight of {op.get_type_name()} '{op.get_friendly_name()}'") for op in layers]
    assert {what for name, what in found if what.startswith("weight of ")} == {what for _, what in weights}
    assert (f"{HEAD}/weights", f"weight of MatMul '{HEAD}'") in weights
    # without the float model: the activation quantizers only, the same ones
    activations = fake_quantizers.listed(heavy_int8.ir)
    assert activations == [(name, what) for name, what in found if (name, what) not in weights]
    assert len(activations) >= 4 and not any(name.endswith("/weights") or what.startswith("weight of ")
                                             for name, what in activations)


def test_reverting_a_weight_gives_the_op_the_float_models_weight(heavy_int8):
    model = heavy_int8.int8
    floating = fake_quantizers.reverted(model, [f"{HEAD}/weights"], heavy_int8.float)
    copied, original = ops_by_name(floating), ops_by_name(model)
    weight = copied[HEAD].input_value(1).get_node()
    assert weight.get_type_name() == "Constant" and weight.get_element_type() == ov.Type.f32
    source = ops_by_name(heavy_int8.float)[HEAD].input_value(1).get_node()
    assert source.get_type_name() == "Constant"
    np.testing.assert_array_equal(weight.get_data(), source.get_data())
    # the INT8 weight it replaced differs: its per-channel steps crush the columns scaled down 1000x
    dequantized = ov.Core().compile_model(ov.Model([ops.result(original[HEAD].input_value(1))], []), "CPU",
                                          F32)({}).to_tuple()[0]
    assert dequantized.shape == source.get_data().shape and np.abs(dequantized - source.get_data()).max() > 0
    others = [name for name, op in copied.items() if op.get_type_name() in ("Convolution", "MatMul") and name != HEAD]
    assert len(others) == 4 and all(integer_source(copied[name].input_value(1)) for name in others)
    assert all(integer_source(original[name].input_value(1)) for name in [*others, HEAD])     # the original kept it
    with pytest.raises(ValueError, match="/weights"):          # a weight needs the float model
        fake_quantizers.reverted(model, [f"{HEAD}/weights"])


def test_the_switchable_model_reverts_a_weight_as_reverted_does(heavy_int8):
    names = [name for name, _ in fake_quantizers.listed(heavy_int8.ir, heavy_int8.float)]
    relu = next(name for name, what in fake_quantizers.listed(heavy_int8.ir)
                if what == "output of Relu '/classifier/classifier.2/Relu'")
    feeds, reference = heavy_int8.feeds, heavy_int8.reference
    run = fake_quantizers.switchable(heavy_int8.ir, names, heavy_int8.float)
    backwards = fake_quantizers.switchable(heavy_int8.ir, names[::-1], heavy_int8.float)
    quantized = run(feeds, np.zeros(len(names), bool))[0]
    results = {}
    for switched in ([f"{HEAD}/weights"], [relu, f"{HEAD}/weights"], [relu]):
        mask = np.isin(names, switched)
        got = run(feeds, mask)[0]
        expected = ov.Core().compile_model(fake_quantizers.reverted(heavy_int8.int8, switched, heavy_int8.float),
                                           "CPU", REVERTED)(feeds).to_tuple()[0]
        # simulated quantizers (f32) against OpenVINO's INT8 kernels for the rest: measured relative difference
        # 0 (the weight alone) and 4e-5 (with the Relu's quantizer), against 0.5 and more that a switch makes
        assert relative(got, expected) < 1e-3, switched
        assert relative(got, quantized) > 0.1, switched
        # mask[i] switches names[i]: the names backwards take the mask backwards
        np.testing.assert_array_equal(backwards(feeds, mask[::-1])[0], got)
        results[tuple(switched)] = relative(got, reference)
    # measured: 0.998 all quantized, 0.994 the weight alone (the Relu's quantizer crushes what it reads), 0.17 the
    # Relu's quantizer alone, 0.017 both
    assert results[(relu, f"{HEAD}/weights")] < results[(relu,)] / 3


def test_the_int8_candidate_reverts_a_quantizer_without_dynamic_quantization(heavy_int8, tmp_path):
    from edgeml.targets.cpu import CPU

    candidate = next(c for c in CPU.candidates if c.name == "openvino-int8")
    onnx_path, context, feeds, reference = heavy_int8.onnx, heavy_int8.context, heavy_int8.feeds, heavy_int8.reference
    full = candidate.build(onnx_path, tmp_path / "full", context)
    assert "DYNAMIC_QUANTIZATION_GROUP_SIZE" not in full.runtime_config
    ir = full.folder / full.entry
    # the activation quantizer whose revert alone brings the output closest to the float model's, ranked as the
    # search ranks them (edgeml.pipeline.tuning.ranking: every listed quantizer switchable, the weights too)
    listed = candidate.quantizers.listed(ir, onnx_path)
    names = [name for name, _ in listed]
    run = candidate.quantizers.switchable(ir, onnx_path, names)
    errors = {(name, what): relative(run(feeds, np.arange(len(names)) == i)[0], reference)
              for i, (name, what) in enumerate(listed) if not name.endswith(fake_quantizers.WEIGHTS)}
    name, what = min(errors, key=errors.get)
    assert what.startswith("output of Relu '/classifier/")        # the hidden Relu's output, the heavy-tailed one
    built = candidate.build(onnx_path, tmp_path / "reverted", replace(context, int8=replace(context.int8,
                                                                                            reverted=(name,))))
    assert built.runtime_config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == "0"
    quantized_error = relative(open_artifact(full, 1).run(feeds)[0], reference)
    reverted_error = relative(open_artifact(built, 1).run(feeds)[0], reference)
    # measured: 0.998 fully quantized, 0.17 with the hidden Relu's quantizer reverted, as the ranking said (0.17)
    assert reverted_error < quantized_error / 2
    assert abs(reverted_error - errors[name, what]) < 0.03
    # OpenVINO's CPU plugin quantizes the float input of a MatMul with integer weights at run time where it
    # defaults to dynamic quantization (DYNAMIC_QUANTIZATION_GROUP_SIZE 32 on this Xeon with AMX, OpenVINO 2026.4):
    # the hidden Relu's output crushed again, measured 0.61 against 0.17
    if ov.Core().get_property("CPU", "DYNAMIC_QUANTIZATION_GROUP_SIZE"):
        without = {k: v for k, v in built.runtime_config.items() if k != "DYNAMIC_QUANTIZATION_GROUP_SIZE"}
        dynamic_error = relative(OpenVinoRunner(built.folder / built.entry, 1, without).run(feeds)[0], reference)
        assert dynamic_error > 2 * reverted_error


def test_the_switchable_model_without_weights_matches_the_reverted_build(heavy_int8):
    """OpenVINO's dynamic quantization would quantize the float input of the head's integer-weight MatMul again."""
    names = [n for n, _ in fake_quantizers.listed(heavy_int8.ir)]
    relu = "/classifier/classifier.2/Relu/fq_output_0"
    got = fake_quantizers.switchable(heavy_int8.ir, names)(heavy_int8.feeds, np.isin(names, [relu]))[0]
    expected = ov.Core().compile_model(fake_quantizers.reverted(heavy_int8.int8, [relu]), "CPU", REVERTED)(
        heavy_int8.feeds).to_tuple()[0]
    assert relative(got, expected) < 1e-2      # 0.61 with dynamic quantization on


def test_reverting_every_quantizer_gives_the_float_model_whose_biases_nncf_corrected(heavy_int8, digits, tmp_path):
    floating = heavy_int8.float
    model = ov_quant.run(convert_onnx(heavy_int8.onnx).model, digits.validation,
                         replace(heavy_int8.context.int8, full_bias_correction=True))
    ov.save_model(model, str(tmp_path / "int8.xml"), compress_to_fp16=False)
    names = [name for name, _ in fake_quantizers.listed(tmp_path / "int8.xml", floating)]
    # NNCF's bias correction changed biases (the Add after a layer) for the quantization error before them
    originals = ops_by_name(floating)
    corrected = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "Add"
                 and op.input_value(1).get_node().get_type_name() == "Constant"
                 and not np.array_equal(op.input_value(1).get_node().get_data(),
                                        originals[op.get_friendly_name()].input_value(1).get_node().get_data())]
    assert corrected
    expected = logits(floating, heavy_int8.feeds)
    everything = fake_quantizers.reverted(model, names, floating)
    assert relative(logits(everything, heavy_int8.feeds, REVERTED), expected) < 1e-6
    run = fake_quantizers.switchable(tmp_path / "int8.xml", names, floating)
    assert relative(run(heavy_int8.feeds, np.ones(len(names), bool))[0], expected) < 1e-6
