"""OpenVINO conversion failures: the row's reason names the ops OpenVINO could not convert, and a model that
converts once ONNX Runtime has folded its constants is built, with a note that the retry was needed."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeml.runtimes.openvino import ConversionError, convert_onnx

QUICK = dict(target="cpu", precision="fp32", measure_seconds=0.05, threads=1, cache=False)


def save(path, nodes, constants=(), domains=()):
    """x [n, 3] -> nodes -> y [n, 3], at opset 17 (and `domains`, version 1)."""
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])], list(constants))
    opsets = [helper.make_opsetid("", 17), *(helper.make_opsetid(d, 1) for d in domains)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
    return path


def scale_by_determinant(path, constant: bool):
    """y = x * det(M): M a weight (a normalizing flow's log-determinant term reads its weights so), or, when not
    `constant`, the 3x3 Gram matrix of each sample's row. OpenVINO has no conversion rule for Det; ONNX Runtime has."""
    weight = numpy_helper.from_array(np.diag([1.0, 2.0, 3.0]).astype(np.float32), "M")
    if constant:
        return save(path, [helper.make_node("Det", ["M"], ["d"], name="det"),
                           helper.make_node("Mul", ["x", "d"], ["y"], name="scale")], [weight])
    shape = numpy_helper.from_array(np.array([-1, 1, 3], np.int64), "shape")
    return save(path, [helper.make_node("Reshape", ["x", "shape"], ["rows"], name="rows"),
                       helper.make_node("Transpose", ["rows"], ["rows_t"], name="transpose", perm=[0, 2, 1]),
                       helper.make_node("MatMul", ["rows_t", "rows"], ["gram"], name="gram"),
                       helper.make_node("Det", ["gram"], ["d"], name="det"),
                       helper.make_node("Unsqueeze", ["d", "axis"], ["d1"], name="unsqueeze"),
                       helper.make_node("Mul", ["x", "d1"], ["y"], name="scale")],
                [shape, numpy_helper.from_array(np.array([1], np.int64), "axis")])


def test_a_custom_domain_op_is_named_in_the_error(tmp_path):
    path = save(tmp_path / "custom.onnx", [helper.make_node("Relu", ["x"], ["r"], name="relu"),
                                           helper.make_node("Frobnicate", ["r"], ["y"], name="frob",
                                                            domain="com.example")], domains=["com.example"])
    with pytest.raises(ConversionError) as caught:
        convert_onnx(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("OpenVINO cannot convert com.example.Frobnicate")
    assert "nor after ONNX Runtime's constant folding" in message        # the retry ran, and why it failed


def test_the_row_of_a_model_openvino_cannot_convert_names_the_op(tmp_path):
    import edgeml

    path = scale_by_determinant(tmp_path / "gram-det.onnx", constant=False)
    run = edgeml.optimize(path, input_shapes=["x:4x3"], out=tmp_path / "out", **QUICK)
    rows = {r.name: r for r in run.rows}
    openvino = rows["openvino-fp32"]
    assert openvino.status == "failed"
    assert openvino.reason.startswith("ConversionError: OpenVINO cannot convert Det-17 (no conversion rule)")
    assert "unconverted_ops_report" not in openvino.reason      # not where in OpenVINO it gave up


def test_a_model_that_converts_once_its_constants_are_folded_is_built_and_says_so(tmp_path):
    import openvino as ov

    import edgeml

    path = scale_by_determinant(tmp_path / "weight-det.onnx", constant=True)
    with pytest.raises(Exception, match="Det"):          # as it is, OpenVINO cannot convert it
        ov.convert_model(str(path))
    converted = convert_onnx(path, {"x": (1, 3)})
    assert converted.notes and converted.notes[0].startswith("ov.convert_model failed on Det-17 (no conversion rule)")
    assert converted.model.inputs[0].get_partial_shape().is_dynamic          # the free batch is free again

    run = edgeml.optimize(path, input_shapes=["x:4x3"], out=tmp_path / "out", **QUICK)
    row = {r.name: r for r in run.rows}["openvino-fp32"]
    assert row.status == "ok", row.reason
    assert any("constant folding" in note for note in row.attempts)           # the report records the retry
    assert row.quality_drop is not None and row.quality_drop <= 1e-6
