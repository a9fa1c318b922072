"""The same settings give the same bundle, byte for byte; a pick that noise could flip is settled as a tie; an
ONNX model that nothing beats is shipped unchanged."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import warnings

import onnx
import pytest
import torch
from torch import nn

from edgeml.bundle.pack import pack
from edgeml.compress.quantize import onnxruntime_backend
from edgeml.hashing import sha256_file
from edgeml.inputs.data import Dataset

QUICK = ["--threads", "1", "--measure-seconds", "0.1"]


def _optimize(out, *args) -> dict:
    """`edgeml optimize ...` in a process of its own; its run record."""
    done = subprocess.run([sys.executable, "-m", "edgeml", "optimize", *map(str, args), "-o", str(out)],
                          check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads((out / "report.json").read_text())


def _bundle_sha256(out) -> str:
    """sha256 of `edgeml pack` of OUT/bundle: every file's name, bytes and mode."""
    archive = pack(out / "bundle", out / "bundle.tar.gz")
    return hashlib.sha256(archive.read_bytes()).hexdigest()


def test_the_demo_twice_and_a_rerun_of_its_recipe_ship_the_same_bundle(tmp_path, digits):
    first = _optimize(tmp_path / "out1", "--example", "digits", "--target", "cpu", *QUICK)
    second = _optimize(tmp_path / "out2", "--example", "digits", "--target", "cpu", *QUICK)
    replay = _optimize(tmp_path / "out3", "--example", "digits", "--recipe", tmp_path / "out1" / "recipe.yaml",
                       "--no-cache")
    assert first["selection"]["candidate"] == second["selection"]["candidate"] == replay["selection"]["candidate"]
    assert _bundle_sha256(tmp_path / "out1") == _bundle_sha256(tmp_path / "out2") == _bundle_sha256(tmp_path / "out3")


def test_an_onnx_model_that_no_candidate_beats_is_shipped_unchanged(tmp_path, files):
    # In FP32 the other candidate is OpenVINO, whose per-call overhead dwarfs this small CNN.
    report = _optimize(tmp_path / "out", files["digits.onnx"], "--data", files["eval.npz"], "--precision", "fp32",
                       *QUICK)
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["onnxruntime-fp32"]["status"] == "skipped" and "original row is this model" in \
        rows["onnxruntime-fp32"]["reason"]
    assert report["selection"]["candidate"] == "original" and rows["original"]["selected"]
    assert report["selection"]["reason"].startswith("no candidate was faster than your model")
    manifest = json.loads((tmp_path / "out" / "bundle" / "manifest.json").read_text())
    assert manifest["candidate"] == "original" and manifest["int8_scheme"] is None
    assert sha256_file(tmp_path / "out" / "bundle" / manifest["entry"]) == sha256_file(files["digits.onnx"])
    assert "no candidate was faster than your model" in (tmp_path / "out" / "report.md").read_text()


class Elementwise(nn.Module):
    """Float elementwise functions and a mean: none of them is an op ONNX Runtime's static INT8 quantizer
    quantizes, so its onnxruntime-int8 build runs the same ops as the model itself."""

    def forward(self, x):                                  # x: (n, 32, 2048)
        return torch.tanh(torch.erf(torch.sin(x) - torch.cos(x))).mean(-1)


@pytest.fixture(scope="module")
def elementwise(tmp_path_factory):
    import numpy as np

    folder = tmp_path_factory.mktemp("elementwise")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # opset 17: ReduceMean's axes is an attribute, not a Constant node that quantizing would fold away
        torch.onnx.export(Elementwise().eval(), (torch.randn(1, 32, 2048),), str(folder / "model.onnx"),
                          dynamo=False, opset_version=17, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    x = np.random.default_rng(0).standard_normal((64, 32, 2048)).astype(np.float32)
    np.savez(folder / "data.npz", x=x)
    return folder


def _op_types(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_two_tied_candidates_are_settled_the_same_way_twice(tmp_path, elementwise):
    # The only two rows are the same computation (checked here), so on any CPU only noise tells their timings apart:
    # the paired rounds call them tied, and the tie goes to the simpler precision, the original's.
    import numpy as np

    model, data = elementwise / "model.onnx", elementwise / "data.npz"
    int8 = onnxruntime_backend.run(model, tmp_path / "int8.onnx", Dataset({"x": np.load(data)["x"][:8]}, None, "x"))
    assert _op_types(int8) == _op_types(model) == ["Sin", "Cos", "Sub", "Erf", "Tanh", "ReduceMean"]
    args = [model, "--data", data, "--precision", "int8", "--quantizer", "ort", *QUICK]
    first = _optimize(tmp_path / "out1", *args)
    second = _optimize(tmp_path / "out2", *args)
    rows = {r["name"]: r for r in first["rows"]}
    assert rows["onnxruntime-int8"]["status"] == "ok" and rows["onnxruntime-int8-dynamic"]["status"] == "skipped"
    paired = first["selection"]["paired"]
    assert paired is not None and set(paired["tied"]) == {"original", "onnxruntime-int8"}, first["selection"]
    assert "tied" in first["selection"]["reason"] and "95% CI" in first["selection"]["reason"]
    assert first["selection"]["candidate"] == second["selection"]["candidate"] == paired["tied"][0] == "original"
    assert _bundle_sha256(tmp_path / "out1") == _bundle_sha256(tmp_path / "out2")
