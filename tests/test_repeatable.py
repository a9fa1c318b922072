"""The same settings give the same bundle: selected candidate and model files byte for byte."""

from __future__ import annotations

import json
import subprocess
import sys

FLAGS = ["--precision", "int8", "--threads", "1", "--measure-seconds", "0.05", "--no-cache"]   # builds, not restores


def _optimize(out, *args) -> dict:
    """`edgeml optimize --example digits ...` in a process of its own; the bundle's manifest."""
    done = subprocess.run([sys.executable, "-m", "edgeml", "optimize", "--example", "digits", *args, "-o", str(out)],
                          check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads((out / "bundle" / "manifest.json").read_text())


def _model_files(manifest: dict) -> dict[str, str]:
    return {f["path"]: f["sha256"] for f in manifest["files"]}


def test_two_runs_and_a_rerun_of_the_recipe_give_the_same_bundle(tmp_path, digits):
    first = _optimize(tmp_path / "out1", *FLAGS)
    second = _optimize(tmp_path / "out2", *FLAGS)
    replay = _optimize(tmp_path / "out3", "--recipe", tmp_path / "out1" / "recipe.yaml", "--seed", "0")
    assert first["candidate"] == second["candidate"] == replay["candidate"]
    assert first["entry"] in _model_files(first)
    assert _model_files(first) == _model_files(second) == _model_files(replay)
    assert first["lineage"]["recipe"] == replay["lineage"]["recipe"]
