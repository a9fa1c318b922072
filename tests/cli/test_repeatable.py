"""The same settings give the same bundle, byte for byte; a pick that noise could flip is settled as a tie; an
ONNX model that nothing beats is shipped unchanged."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

from edgeml.bundle.pack import pack
from edgeml.hashing import sha256_file

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
    """Nearly all of its time goes to float elementwise functions that no INT8 pass touches; a tiny Gemm head
    is all that quantization changes, so its FP32 and INT8 builds run in about the same time."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(32, 4)

    def forward(self, x):                                  # x: (n, 32, 2048)
        y = torch.erf(torch.sin(x) + torch.cos(x))
        return self.head(torch.tanh(y).mean(-1))


@pytest.fixture(scope="module")
def elementwise(tmp_path_factory):
    import numpy as np

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("elementwise")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Elementwise().eval(), (torch.randn(1, 32, 2048),), str(folder / "model.onnx"),
                          dynamo=False, input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    x = np.random.default_rng(0).standard_normal((64, 32, 2048)).astype(np.float32)
    np.savez(folder / "data.npz", x=x)
    return folder


def test_two_tied_candidates_are_settled_the_same_way_twice(tmp_path, elementwise):
    args = [elementwise / "model.onnx", "--data", elementwise / "data.npz", "--quantizer", "ort", *QUICK]
    first = _optimize(tmp_path / "out1", *args)
    second = _optimize(tmp_path / "out2", *args)
    paired = first["selection"]["paired"]
    assert paired is not None and len(paired["tied"]) >= 2, first["selection"]
    assert "tied" in first["selection"]["reason"] and "95% CI" in first["selection"]["reason"]
    assert first["selection"]["candidate"] == second["selection"]["candidate"] == paired["tied"][0]
    assert _bundle_sha256(tmp_path / "out1") == _bundle_sha256(tmp_path / "out2")
