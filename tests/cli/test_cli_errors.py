"""User errors: one line on stderr, exit code 2, no traceback, nothing left in OUT."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch


class Payload:
    """Pickles to a call that writes a marker file: proof of code execution if unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _bad_inputs(files, tmp):
    truncated = tmp / "truncated.onnx"
    truncated.write_bytes(files["digits.onnx"].read_bytes()[:5000])
    garbage = tmp / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01not an onnx model" * 50)
    wrong_name = tmp / "wrong_name.npz"
    np.savez(wrong_name, pixels=np.zeros((4, 1, 8, 8), np.float32))
    wrong_shape = tmp / "wrong_shape.npz"
    np.savez(wrong_shape, input=np.zeros((4, 1, 16, 16), np.float32))
    bad_labels = tmp / "bad_labels.npz"
    np.savez(bad_labels, input=np.zeros((4, 1, 8, 8), np.float32), labels=np.array([0, 1, 2, 12]))
    evil = tmp / "evil.pt"
    evil.write_bytes(pickle.dumps(Payload(tmp / "PWNED")))
    other = tmp / "other_model.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), other)
    recipe = tmp / "recipe.yaml"
    recipe.write_text("pruning: 0.5\n")
    return dict(truncated=truncated, garbage=garbage, wrong_name=wrong_name, wrong_shape=wrong_shape,
                bad_labels=bad_labels, evil=evil, other=other, recipe=recipe)


FACTORY = ["optimize", "edgeml.examples:DigitsCNN", "--input-shape", "1x1x8x8"]

CASES = {
    "missing model": (lambda f, b: ["optimize", "nope.onnx"], "model file not found: nope.onnx"),
    "truncated onnx": (lambda f, b: ["optimize", b["truncated"]], "is not a valid ONNX model"),
    "corrupt onnx": (lambda f, b: ["optimize", b["garbage"]], "is not a valid ONNX model"),
    "checkpoint as model": (lambda f, b: ["optimize", f["weights.pt"]],
                            "torch.save checkpoint, which edgeml does not unpickle"),
    "wrong array names": (lambda f, b: ["optimize", f["digits.onnx"], "--eval-data", b["wrong_name"]],
                          "do not match the model's inputs ['input']"),
    "wrong data shape": (lambda f, b: ["optimize", f["digits.onnx"], "--eval-data", b["wrong_shape"]],
                         "'input' has shape 4x1x16x16, the model expects nx1x8x8"),
    "labels out of range": (lambda f, b: ["optimize", f["digits.onnx"], "--eval-data", b["bad_labels"]],
                            "the model scores 10 classes"),
    "shape contradicts model": (lambda f, b: ["optimize", f["digits.onnx"], "--input-shape", "input:1x1x9x9"],
                                "the model fixes dimension 2 to 8"),
    "malformed shape": (lambda f, b: ["optimize", f["digits.onnx"], "--input-shape", "input:"],
                        "cannot read --input-shape"),
    "unknown target": (lambda f, b: ["optimize", f["digits.onnx"], "--target", "tpu"], "unknown target 'tpu'"),
    "same calib and eval": (lambda f, b: ["optimize", f["digits.onnx"], "--calib-data", f["eval.npz"],
                                          "--eval-data", f["eval.npz"]],
                            "calibration and evaluation data are the same"),
    "split without data": (lambda f, b: ["optimize", f["digits.onnx"], "--split", "0.5"], "give --data too"),
    "data and calib data": (lambda f, b: ["optimize", f["digits.onnx"], "--data", f["eval.npz"],
                                          "--calib-data", f["calib.npz"]], "use either --data"),
    "missing data file": (lambda f, b: ["optimize", f["digits.onnx"], "--calib-data", "nope.npz"],
                          "data not found: nope.npz"),
    "weights of another model": (lambda f, b: FACTORY + ["--weights", b["other"]],
                                 "do not fit the factory's model: missing"),
    "weights not a checkpoint": (lambda f, b: FACTORY + ["--weights", b["wrong_name"]], "cannot load weights"),
    "pickle with code as weights": (lambda f, b: FACTORY + ["--weights", b["evil"]],
                                    "will not run code from a checkpoint"),
    "unknown factory": (lambda f, b: ["optimize", "edgeml.nowhere:Model"],
                        "cannot import factory edgeml.nowhere:Model"),
    "model and example": (lambda f, b: ["optimize", f["digits.onnx"], "--example", "digits"],
                          "give a MODEL or --example digits"),
    "bad budget": (lambda f, b: ["optimize", f["digits.onnx"], "--max-accuracy-drop", "5"],
                   "(--max-accuracy-drop) is a fraction"),
    "prune an onnx model": (lambda f, b: ["optimize", f["digits.onnx"], "--prune", "0.5"],
                            "pruning and distillation change a PyTorch model; MODEL is ONNX"),
    "distill without data": (lambda f, b: FACTORY + ["--weights", f["weights.pt"], "--distill"],
                             "distillation trains on data: give --train-data"),
    "importance without ratio": (lambda f, b: ["optimize", f["digits.onnx"], "--prune-importance", "taylor"],
                                 "refine --prune RATIO; give it too"),
    "bad prune ratio": (lambda f, b: FACTORY + ["--prune", "1.5"], "pruning ratio"),
    "ignore unknown layer": (lambda f, b: FACTORY + ["--prune", "0.5", "--ignore-layer", "features.99"],
                             "features.99"),
    "bad tuning budget": (lambda f, b: ["optimize", f["digits.onnx"], "--tuning-budget", "soon"],
                          "is not a duration"),
    "recipe with unknown key": (lambda f, b: ["optimize", f["digits.onnx"], "--recipe", b["recipe"]],
                                "unknown setting(s) pruning"),
    "prune command without inputs": (lambda f, b: ["prune", f["digits.pt2"]], "pruning needs example inputs"),
    "distill a torchscript": (lambda f, b: ["distill", f["digits.ts"], "--input-shape", "input:?x1x8x8", "--student",
                                            f["digits.pt2"], "--train-data", f["calib.npz"]],
                              "distillation needs a PyTorch nn.Module"),
}


@pytest.mark.parametrize("case", CASES)
def test_user_error(case, edgeml_cli, files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_args, message = CASES[case]
    out = tmp_path / "runs" / "out"
    args = make_args(files, _bad_inputs(files, tmp_path))
    quick = ["--measure-seconds", "0.05"] if args[0] == "optimize" else []
    result = edgeml_cli(*args, "-o", out, *quick)
    assert result.exit_code == 2, result.stderr
    last = result.stderr.splitlines()[-1]           # progress lines may come before it
    assert last.startswith("error: ") and message in last, result.stderr
    assert sum(line.startswith("error") for line in result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "runs").exists()            # neither OUT, nor staging, nor created parents
    assert not (tmp_path / "PWNED").exists()


def test_unwritable_out(edgeml_cli, files, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = edgeml_cli("optimize", files["digits.onnx"], "-o", blocker / "out")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: cannot write the output folder {blocker / 'out'}")
    assert blocker.read_text() == ""


def test_existing_out_needs_force(edgeml_cli, files, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = edgeml_cli("optimize", files["digits.onnx"], "-o", out)
    assert result.exit_code == 2 and "already exists" in result.stderr and "--force" in result.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    result = edgeml_cli("optimize", files["digits.onnx"], "--calib-data", files["calib.npz"],
                        "--eval-data", files["eval.npz"], "-o", out, "--force", "--precision", "fp32", "--threads", "1",
                        "--measure-seconds", "0.05")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["bundle", "recipe.yaml", "report.json", "report.md"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_debug_shows_the_traceback(edgeml_cli, tmp_path):
    from edgeml.errors import ModelError

    with pytest.raises(ModelError, match="model file not found"):
        edgeml_cli("--debug", "optimize", tmp_path / "nope.onnx")
