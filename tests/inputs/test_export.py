from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgeml.errors import ExportError
from edgeml.inputs.export import check_parity, export_onnx
from edgeml.inputs.models import load_model


class DataDependent(torch.nn.Module):
    """Branches on a tensor value: torch.export cannot trace it, the legacy tracer can."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x):
        if x.sum() > -1e9:
            return self.linear(x)
        return -self.linear(x)


def test_dynamo_export_has_symbolic_batch(digits, tmp_path):
    source = load_model(digits.model, input_shapes=["1x1x8x8"])
    result = export_onnx(source, tmp_path / "m.onnx", {"input": digits.test.inputs["input"][:2]})
    assert result.exporter == "dynamo" and result.notes == []
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    assert session.get_inputs()[0].shape[0] == "batch"
    x = digits.test.inputs["input"][:5]
    with torch.no_grad():
        expected = digits.model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, atol=1e-4)
    # No stack traces: the export holds no path of this machine (the model's file, torch in the venv).
    text = (tmp_path / "m.onnx").read_bytes()
    assert b"stack_trace" not in text and str(Path(torch.__file__).parent).encode() not in text
    assert b"class_hierarchy" in text                     # the exporter's other node metadata is kept


def test_falls_back_to_legacy_exporter_and_says_why(tmp_path):
    torch.manual_seed(0)
    source = load_model(DataDependent().eval(), input_shapes=["1x4"])
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    result = export_onnx(source, tmp_path / "m.onnx", {"x": x})
    assert result.exporter == "legacy"
    assert "the dynamo exporter failed" in result.notes[0] and "data-dependent" in result.notes[0].lower()
    out = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"x": x})[0]
    np.testing.assert_allclose(out, source.module(torch.from_numpy(x)).detach().numpy(), atol=1e-5)


def test_parity_names_the_worst_output():
    ref = [np.ones((4, 3)), np.ones((4, 2))]
    close = [ref[0] + 1e-6, ref[1]]
    parity = check_parity(["a", "b"], close, ref)
    assert parity.outputs[0]["max_abs_error"] == pytest.approx(1e-6)
    with pytest.raises(ExportError, match="output 'b': max abs error 0.5"):
        check_parity(["a", "b"], [ref[0] + 1e-6, ref[1] + 0.5], ref)
