"""INT8 builds that hold on graphs exported by other tools: each failure mode met on a real model, reproduced
with a small model of the same kind. Every build checks its graph after each step, falls back when a step
breaks it, records its attempts, and writes nothing to the current folder."""

import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edgeml.compress.quantize import Int8Config, onnxruntime_backend
from edgeml.compress.quantize import onnx_attempts as attempts
from edgeml.errors import first_line
from edgeml.inputs.data import Dataset
from edgeml.time_limit import TimeLimit

QUICK = ("--measure-seconds", "0.05", "--threads", "1")


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    """An empty current folder: builds must leave it empty."""
    folder = tmp_path / "cwd"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def outputs(model, feeds):
    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def cosine(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def paddle_like(path, opset):
    """Conv+BatchNormalization+Relu blocks, global pooling and a Gemm, at an old opset with a -1 batch dimension,
    as PaddlePaddle's paddle2onnx writes them (quantized per channel as given, the Q/DQ `axis` is invalid)."""
    rng = np.random.default_rng(opset)
    inits, nodes, x, channels = [], [], "x", 3
    for i, width in enumerate((8, 16, 16)):
        w = (rng.standard_normal((width, channels, 3, 3)) / np.sqrt(9 * channels)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"conv{i}.w"),
                  numpy_helper.from_array(rng.uniform(0.5, 1.5, width).astype(np.float32), f"bn{i}.scale"),
                  numpy_helper.from_array(rng.normal(0, 0.1, width).astype(np.float32), f"bn{i}.b"),
                  numpy_helper.from_array(rng.normal(0, 0.1, width).astype(np.float32), f"bn{i}.mean"),
                  numpy_helper.from_array(rng.uniform(0.5, 2, width).astype(np.float32), f"bn{i}.var")]
        nodes += [helper.make_node("Conv", [x, f"conv{i}.w"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1],
                                   strides=[2, 2] if i else [1, 1]),
                  helper.make_node("BatchNormalization", [f"c{i}", f"bn{i}.scale", f"bn{i}.b", f"bn{i}.mean",
                                                          f"bn{i}.var"], [f"b{i}"], name=f"batch_norm{i}",
                                   epsilon=1e-5),
                  helper.make_node("Relu", [f"b{i}"], [f"r{i}"], name=f"relu{i}")]
        x, channels = f"r{i}", width
    inits += [numpy_helper.from_array(rng.standard_normal((channels, 4)).astype(np.float32) / 4, "fc.w"),
              numpy_helper.from_array(np.zeros(4, np.float32), "fc.b")]
    nodes += [helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"),
              helper.make_node("Flatten", ["pool"], ["flat"], name="flatten", axis=1),
              helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc")]
    graph = helper.make_graph(nodes, "paddle_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                   [-1, 3, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [-1, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="PaddlePaddle")
    model.ir_version = 6
    onnx.save(model, str(path))
    return path


def nhwc_like(path):
    """A channels-last graph as tf2onnx writes it at opset 11: Transposes around every Conv, Reshape, MatMul."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) / 5, "k0"),
             numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32) / 8, "k1"),
             numpy_helper.from_array(rng.standard_normal((8 * 16 * 16, 5)).astype(np.float32) / 40, "dense"),
             numpy_helper.from_array(np.array([-1, 8 * 16 * 16], np.int64), "flat")]
    nodes = [helper.make_node("Transpose", ["x"], ["t0"], name="to_nchw0", perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t0", "k0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
             helper.make_node("Transpose", ["c0"], ["n0"], name="to_nhwc0", perm=[0, 2, 3, 1]),
             helper.make_node("Relu", ["n0"], ["r0"], name="relu0"),
             helper.make_node("Transpose", ["r0"], ["t1"], name="to_nchw1", perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t1", "k1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Transpose", ["c1"], ["n1"], name="to_nhwc1", perm=[0, 2, 3, 1]),
             helper.make_node("Reshape", ["n1", "flat"], ["f"], name="reshape"),
             helper.make_node("MatMul", ["f", "dense"], ["logits"], name="dense")]
    graph = helper.make_graph(nodes, "nhwc", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                            ["n", 16, 16, 3])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 5])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], producer_name="tf2onnx"),
              str(path))
    return path


def images(shape, n=16, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, *shape)).astype(np.float32)


@pytest.mark.parametrize("opset", [9, 10, 11])
def test_old_opset_conv_batchnorm_graph_is_converted_and_quantized_per_channel(tmp_path, cwd, opset):
    model = paddle_like(tmp_path / "paddle.onnx", opset)
    data = Dataset({"x": images((3, 32, 32))}, None, "uniform images")
    built = onnxruntime_backend.static(model, tmp_path / "int8.onnx", data)
    attempts.check(built.model)                       # before: INVALID_GRAPH (DequantizeLinear `axis` at opset 11)
    assert built.attempt.startswith(f"opset {opset} -> {attempts.QUANTIZER_OPSET}")
    assert built.notes[-1] == f"{built.attempt}: ok"
    quantized = onnx.load(str(built.model))
    assert attempts.opset(built.model) == attempts.QUANTIZER_OPSET
    per_channel = [n for n in quantized.graph.node if n.op_type == "DequantizeLinear"
                   and any(a.name == "axis" for a in n.attribute)]
    assert per_channel                                 # per-channel weights, as asked
    assert cosine(outputs(model, data.inputs), outputs(built.model, data.inputs)) > 0.98
    assert list(cwd.iterdir()) == []


def test_transpose_heavy_channels_last_graph(tmp_path, cwd):
    model = nhwc_like(tmp_path / "nhwc.onnx")
    data = Dataset({"x": images((16, 16, 3))}, None, "uniform images")
    built = onnxruntime_backend.static(model, tmp_path / "int8.onnx", data)
    attempts.check(built.model)
    assert "-> 13" in built.attempt
    ops = [n.op_type for n in onnx.load(str(built.model)).graph.node]
    assert ops.count("Conv") == 2 and ops.count("QuantizeLinear") >= 3
    assert cosine(outputs(model, data.inputs), outputs(built.model, data.inputs)) > 0.98
    assert list(cwd.iterdir()) == []


class TokenClassifier(torch.nn.Module):
    """Token ids (int64) -> embedding, mean over tokens, linear classifier."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(200, 32)
        self.fc = torch.nn.Linear(32, 4)

    def forward(self, ids):
        return self.fc(self.embed(ids).mean(1))


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_int64_token_inputs_are_fed_and_never_quantized(tmp_path, cwd, dynamo):
    torch.manual_seed(0)
    model = tmp_path / "tokens.onnx"
    ids = torch.randint(0, 200, (2, 12))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(TokenClassifier().eval(), (ids,), str(model), input_names=["ids"], dynamo=True,
                              dynamic_shapes=({0: "n"},))
        else:
            torch.onnx.export(TokenClassifier().eval(), (ids,), str(model), input_names=["ids"], dynamo=False,
                              dynamic_axes={"ids": {0: "n"}})
    data = Dataset({"ids": np.random.default_rng(0).integers(0, 200, (32, 12))}, None, "random token ids")
    for build in (lambda out: onnxruntime_backend.static(model, out, data),
                  lambda out: onnxruntime_backend.dynamic(model, out)):
        built = build(tmp_path / "int8.onnx")
        attempts.check(built.model)
        graph = onnx.load(str(built.model)).graph
        assert not [n for n in graph.node if n.op_type in ("QuantizeLinear", "DynamicQuantizeLinear")
                    and n.input[0] == "ids"]           # the ids reach the Gather as they are
        assert np.array_equal(outputs(model, data.inputs).argmax(1), outputs(built.model, data.inputs).argmax(1)) \
            or cosine(outputs(model, data.inputs), outputs(built.model, data.inputs)) > 0.98
    assert list(cwd.iterdir()) == []


class TwoStreamLSTM(torch.nn.Module):
    """Two feature streams concatenated into a 3-layer LSTM. The streams' lengths are separate dynamic
    dimensions, which onnxruntime's symbolic shape inference cannot merge: it gives up ("Incomplete symbolic
    shape inference"), as it did on an exported LSTM with external data."""

    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(16, 64, num_layers=3, batch_first=True)
        self.linear = torch.nn.Linear(64, 5)

    def forward(self, x, y):
        return self.linear(self.lstm(torch.cat([x, y], -1))[0][:, -1])


@pytest.fixture
def lstm_with_external_data(tmp_path):
    torch.manual_seed(0)
    folder = tmp_path / "exported"
    folder.mkdir()
    model = folder / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(TwoStreamLSTM().eval(), (torch.randn(1, 20, 8), torch.randn(1, 20, 8)), str(model),
                          input_names=["x", "y"], dynamo=False,
                          dynamic_axes={"x": {0: "n", 1: "t"}, "y": {0: "n", 1: "u"}})
    onnx.save(onnx.load(str(model)), str(model), save_as_external_data=True, size_threshold=0,
              location="model.onnx.data")
    rng = np.random.default_rng(0)
    data = Dataset({k: rng.standard_normal((16, 20, 8)).astype(np.float32) for k in ("x", "y")}, None, "noise")
    return model, data


def test_external_data_survives_the_fallbacks_of_both_int8_builds(lstm_with_external_data, tmp_path, cwd):
    model, data = lstm_with_external_data
    assert attempts.has_external_data(model)
    for name, build in (("static", lambda out: onnxruntime_backend.static(model, out, data)),
                        ("dynamic", lambda out: onnxruntime_backend.dynamic(model, out))):
        built = build(tmp_path / f"{name}.onnx")       # before: ValidationError "Data of TensorProto ... should be
        attempts.check(built.model)                    # stored in <temp>/model.onnx.data"
        given = f"opset {attempts.opset(model)}"
        assert built.notes[0].startswith(f"{given}, full pre-processing: failed at symbolic shape inference:")
        assert "Incomplete symbolic shape inference" in built.notes[0]
        assert built.attempt == f"{given}, without symbolic shape inference"
        assert cosine(outputs(model, data.inputs), outputs(built.model, data.inputs)) > 0.95
        assert [p.name for p in tmp_path.glob(f"{name}.onnx*")] == [f"{name}.onnx"]     # self-contained
    assert list(cwd.iterdir()) == []                   # before: sym_shape_infer_temp.onnx and <uuid>.data files


def break_graph(model, out):
    """A rewrite that breaks the graph: the first node reads a tensor nothing produces."""
    proto = onnx.load(str(model))
    proto.graph.node[0].input[0] = "missing"
    onnx.save(proto, str(out))


def copy_graph(model, out):
    onnx.save(onnx.load(str(model)), str(out))


def test_a_step_that_breaks_the_graph_is_retried_without_it(tmp_path):
    model = nhwc_like(tmp_path / "nhwc.onnx")
    broken, kept = attempts.Step("breaking rewrite", break_graph), attempts.Step("copy", copy_graph)
    work = tmp_path / "work"
    work.mkdir()
    outcome = attempts.first_working(model, [attempts.Attempt("with the rewrite", (kept, broken)),
                                             attempts.Attempt("shares its first step", (kept, broken, kept)),
                                             attempts.Attempt("without it", (kept,))], work)
    assert outcome.attempt == "without it"
    assert outcome.notes[0].startswith("with the rewrite: failed at breaking rewrite: ")
    assert "missing" in outcome.notes[0]
    assert outcome.notes[1] == "shares its first step: failed at breaking rewrite, as above"
    assert outcome.notes[2] == "without it: ok"
    attempts.check(outcome.model)
    assert len(list(work.glob("step*.onnx"))) == 2      # the shared steps ran once

    with pytest.raises(attempts.AttemptsFailed) as failed:
        attempts.first_working(model, [attempts.Attempt("first", (kept, broken)), attempts.Attempt("last", (broken,))],
                               work)
    assert first_line(failed.value).startswith("no attempt gave a valid model; the last, last: failed at breaking "
                                               "rewrite: ")


def test_a_time_limit_is_not_taken_for_a_broken_step(tmp_path):
    def stuck(model, out):
        raise TimeLimit("time limit (1 s, the tuning budget): the build of x did not finish")
    with pytest.raises(TimeLimit):
        attempts.first_working(nhwc_like(tmp_path / "m.onnx"),
                               [attempts.Attempt("slow", (attempts.Step("stuck", stuck),)),
                                attempts.Attempt("as is", ())], tmp_path)


def bare_assert():
    raise AssertionError


def test_a_python_error_says_where_it_was_raised():
    with pytest.raises(AssertionError) as raised:
        bare_assert()
    line = raised.value.__traceback__.tb_next.tb_lineno
    assert attempts.describe(raised.value) == f"AssertionError in test_quantize_robust.py:{line} (bare_assert)"
    with pytest.raises(ValueError) as raised:
        bool(np.zeros(2))
    assert attempts.describe(raised.value).startswith("ValueError: The truth value of an array with more than one "
                                                      "element is ambiguous")
    assert attempts.describe(raised.value).endswith("(test_a_python_error_says_where_it_was_raised)")


def test_optimize_reports_the_attempts_and_keeps_them_in_the_cache(edgeml_cli, lstm_with_external_data, tmp_path,
                                                                    cwd):
    model, data = lstm_with_external_data
    given = f"opset {attempts.opset(model)}"
    np.savez(tmp_path / "calib.npz", **data.inputs)
    np.savez(tmp_path / "eval.npz", **{k: v[:8] for k, v in data.inputs.items()})
    for run in ("built", "restored"):
        out = tmp_path / run
        result = edgeml_cli("optimize", model, "--target", "cpu", "--precision", "int8", "--quantizer", "ort",
                            "--calib-data", tmp_path / "calib.npz", "--eval-data", tmp_path / "eval.npz",
                            "-o", out, *QUICK)
        assert result.exit_code == 0, result.output
        rows = {r["name"]: r for r in json.loads((out / "report.json").read_text())["rows"]}
        for name in ("onnxruntime-int8", "onnxruntime-int8-dynamic"):
            assert rows[name]["status"] == "ok", rows[name]["reason"]
            assert rows[name]["cached"] == (run == "restored")
            assert rows[name]["attempts"][-1] == f"{given}, without symbolic shape inference: ok"
        md = (out / "report.md").read_text()
        assert f"- onnxruntime-int8: {given}, without symbolic shape inference: ok; before: {given}, full " \
               "pre-processing: failed at symbolic shape inference: Exception: Incomplete symbolic shape " \
               "inference" in md
    assert list(cwd.iterdir()) == []


class MaskedEncoder(torch.nn.Module):
    """Token ids and an attention mask (int64) -> a transformer encoder whose padding becomes an additive mask of
    -3.4e38, as in BERT, which the histogram calibrations cannot bin."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(200, 32)
        self.layer = torch.nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)
        self.fc = torch.nn.Linear(32, 4)

    def forward(self, ids, mask):
        scores = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        length = ids.shape[1]
        h = self.layer(self.embed(ids), src_mask=scores.expand(-1, 4, length, -1).reshape(-1, length, length))
        return self.fc(h[:, 0])


def test_histogram_calibration_falls_back_to_min_max_on_an_attention_mask(tmp_path, cwd):
    torch.manual_seed(0)
    model = tmp_path / "masked.onnx"
    ids = torch.randint(0, 200, (2, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(MaskedEncoder().eval(), (ids, torch.ones_like(ids)), str(model), input_names=["ids", "mask"],
                          dynamo=False, dynamic_axes={"ids": {0: "n"}, "mask": {0: "n"}})
    rng = np.random.default_rng(0)
    mask = (np.arange(16)[None] < rng.integers(4, 16, (32, 1))).astype(np.int64)
    data = Dataset({"ids": rng.integers(0, 200, (32, 16)) * mask, "mask": mask}, None, "padded token ids")
    built = onnxruntime_backend.static(model, tmp_path / "int8.onnx", data, Int8Config(calibration_method="entropy"))
    attempts.check(built.model)
    assert built.attempt.endswith("quantize_static (minmax calibration)")
    assert any("quantize_static (entropy calibration): ValueError" in note for note in built.notes)
    assert cosine(outputs(model, data.inputs), outputs(built.model, data.inputs)) > 0.9
    assert list(cwd.iterdir()) == []


def test_nodes_the_pre_processing_leaves_unnamed_are_named_and_kept_in_float_like_the_rest(tmp_path, cwd):
    """HardSwish comes out of the pre-processing as an unnamed HardSigmoid and Mul (a PaddlePaddle text recognizer):
    unnamed, its Mul could not be kept in float, and every listed layer in float was not the float model."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w")
    head = numpy_helper.from_array(rng.normal(0, 0.3, (4, 8, 1, 1)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("HardSwish", ["c"], ["h"], name="hardswish"),
         helper.make_node("Conv", ["h", "w2"], ["y"], name="head")],
        "hardswish", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 16, 16])], [weight, head])
    model = tmp_path / "hardswish.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), str(model))
    layers = onnxruntime_backend.compute_layers(model)
    assert all(name for name, _ in layers) and "Mul" in {op for _, op in layers}, layers
    data = Dataset({"x": images((3, 16, 16))}, None, "uniform images")
    every = onnxruntime_backend.static(model, tmp_path / "float.onnx", data,
                                       Int8Config(exclude=tuple(name for name, _ in layers)))
    assert not [n for n in onnx.load(str(every.model)).graph.node if n.op_type == "QuantizeLinear"]
    np.testing.assert_allclose(outputs(every.model, data.inputs), outputs(model, data.inputs), rtol=1e-5, atol=1e-5)
