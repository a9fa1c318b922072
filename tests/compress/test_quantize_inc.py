"""Intel Neural Compressor INT8 (`--quantizer inc`): a real PT2E graph, calibrated, run by the pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgeml.compress import torch_passes
from edgeml.compress.quantize import inc_backend
from edgeml.inputs.models import load_model

QUICK = ("--measure-seconds", "0.05", "--threads", "1")
QDQ = ("quantized_decomposed.quantize_per_tensor", "quantized_decomposed.dequantize_per_channel")


def accuracy(module, dataset) -> float:
    with torch.no_grad():
        logits = module(torch.from_numpy(dataset.inputs["input"]))
    return float(np.mean(logits.argmax(1).numpy() == dataset.labels))


@pytest.mark.parametrize("max_drop", [None, 0.01])
def test_run_inserts_int8_ops_and_keeps_accuracy(digits, max_drop):
    example = (torch.from_numpy(digits.validation.inputs["input"][:2]),)
    graph = inc_backend.run(digits.model, example, digits.validation, max_drop=max_drop)
    targets = {str(n.target) for n in graph.graph.nodes if n.op == "call_function"}
    assert all(any(t.startswith(op) for t in targets) for op in QDQ), targets
    assert accuracy(graph, digits.test) >= accuracy(digits.model, digits.test) - 0.02


def test_a_pt2_model_is_quantized_too(files, digits):
    """A re-traced ExportedProgram records ATen ops as sources; its conv/linear layers must still be found."""
    module = torch_passes.torch_module(load_model(files["digits.pt2"]), "INC")
    example = (torch.from_numpy(digits.validation.inputs["input"][:2]),)
    graph = inc_backend.run(module, example, digits.validation)
    ops = [str(n.target) for n in graph.graph.nodes]
    assert sum(t.startswith("quantized_decomposed.quantize_per_channel") for t in ops) == 5   # 3 conv + 2 linear
    assert accuracy(graph, digits.test) >= accuracy(digits.model, digits.test) - 0.02


def optimize(edgeml_cli, files, model, out, *extra):
    return edgeml_cli("optimize", files[model], *extra, "--calib-data", files["calib.npz"],
                      "--eval-data", files["eval.npz"], "-o", out, *QUICK)


def test_optimize_with_inc_bundles_a_pt2(files, edgeml_cli, tmp_path):
    out = tmp_path / "out"
    result = optimize(edgeml_cli, files, "digits.pt2", out, "--quantizer", "inc", "--precision", "int8")
    assert result.exit_code == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert list(rows) == ["original", "torch-int8-inc"]
    inc = rows["torch-int8-inc"]
    assert inc["status"] == "ok" and inc["backend"] == "torch" and inc["selected"], inc["reason"]
    assert inc["metrics"]["accuracy"] >= rows["original"]["metrics"]["accuracy"] - 0.02
    assert inc["metrics"]["agreement"] > 0.97 and inc["peak_memory_bytes"] > 0

    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert manifest["entry"] == "model.pt2" and manifest["runtime_config"] == {"inputs": ["input"]}
    import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers the ops the INT8 program calls)

    program = torch.export.load(str(out / "bundle" / "model.pt2"))
    assert any(str(n.target).startswith(QDQ[0]) for n in program.graph.nodes)
    data = np.load(files["eval.npz"])
    logits = program.module()(torch.from_numpy(data["input"][:50]))
    assert np.mean(logits.argmax(1).numpy() == data["labels"][:50]) > 0.9


def test_inc_is_opt_in(files, edgeml_cli, tmp_path):
    result = optimize(edgeml_cli, files, "digits.pt2", tmp_path / "out", "--precision", "int8")
    assert result.exit_code == 0, result.stderr
    names = [r["name"] for r in json.loads((tmp_path / "out" / "report.json").read_text())["rows"]]
    assert "onnxruntime-int8" in names and "torch-int8-inc" not in names


def test_inc_on_an_onnx_model_is_a_user_error(files, edgeml_cli, tmp_path):
    out = tmp_path / "out"
    result = optimize(edgeml_cli, files, "digits.onnx", out, "--quantizer", "inc", "--precision", "int8")
    assert result.exit_code == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert errors == ["error: --quantizer inc quantizes a PyTorch model; MODEL is ONNX: give the PyTorch model "
                      "(factory + --weights, or a .pt2)"]
    assert "Traceback" not in result.stdout + result.stderr and not out.exists()


class BatchOfTwoOnly(torch.nn.Module):
    """Branches on its batch size, so torch.export cannot keep that size symbolic."""

    def forward(self, input):
        return input + 1 if input.shape[0] == 2 else input - 1


def test_a_program_that_cannot_keep_a_symbolic_batch_is_saved_with_batch_one(tmp_path):
    from edgeml.runtimes.base import Artifact
    from edgeml.runtimes.pytorch import open_program, write_program

    config = write_program(BatchOfTwoOnly(), (torch.zeros(2, 3),), tmp_path / "model.pt2")
    assert config == {"batch": 1}
    artifact = Artifact("torch", "fp32", tmp_path, "model.pt2", runtime_config={"inputs": ["input"], **config})
    out = open_program(artifact, 1).run({"input": np.zeros((5, 3), np.float32)})
    np.testing.assert_array_equal(out[0], np.full((5, 3), -1, np.float32))     # one sample a call
