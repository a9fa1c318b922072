"""SWEEP.yaml is checked whole before anything runs: one-line errors for unknown keys, missing files and cells
that cannot run; a grid and a list of profiles expand into cells."""

from __future__ import annotations

import pytest
import yaml
from sweeps import EXAMPLE

from edgeml.sweep.spec import SweepError, load_sweep

BASE = {"models": {"digits": {"example": "digits"}}, "targets": ["cpu"],
        "recipes": [{"name": "int8", "precision": "int8"}]}


def write(tmp_path, data, name="sweep.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_grid_and_profiles_expand_into_cells(tmp_path):
    sweep = load_sweep(write(tmp_path, {
        **BASE, "targets": ["cpu", {"target": "jetson", "profiles": ["jetson-orin-nano", "jetson-orin-nx"]}],
        "recipes": {"grid": {"precision": ["int8"], "calibration_method": ["minmax", "entropy"]}},
        "settings": {"threads": 1}}))
    assert [c.id for c in sweep.cells] == [
        f"digits/{t}/precision=int8,calibration_method={m}"
        for t in ("cpu", "jetson@jetson-orin-nano", "jetson@jetson-orin-nx") for m in ("minmax", "entropy")]
    assert sweep.cells[0].settings == {"threads": 1, "precision": "int8", "calibration_method": "minmax",
                                       "target": "cpu", "profile": None}
    assert len({c.digest for c in sweep.cells}) == len(sweep.cells)


def onnx_file(path):
    """A file named .onnx: the sweep file is checked for what exists and what kind it is; cells load the model."""
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"")
    return path


def test_paths_are_relative_to_the_sweep_file(tmp_path):
    model = onnx_file(tmp_path / "models" / "digits.onnx")
    (tmp_path / "eval.npz").write_bytes(b"")
    sweep = load_sweep(write(tmp_path, {**BASE, "models": {"net": {"model": "models/digits.onnx",
                                                                     "eval_data": "eval.npz"}}}))
    assert sweep.cells[0].given["model"] == str(model)
    assert sweep.cells[0].given["eval_data"] == str(tmp_path / "eval.npz")


@pytest.mark.parametrize("change, message", [
    ({"model": 1}, "the file: unknown key(s) model; known: models, targets, recipes, settings, cache_dir"),
    ({"models": {"digits": {"example": "digits", "weigths": "w.pt"}}}, "models.digits: unknown key(s) weigths"),
    ({"models": {"net": {"model": "missing.onnx"}}}, "missing.onnx does not exist"),
    ({"models": {"digits": {"example": "digits"}, "net": {"model": "pkg.m:f", "weights": "w.pt"}}},
     "models.net.weights:"),
    ({"targets": ["cpu", "fpga"]}, "cell digits/fpga/int8: unknown target 'fpga'"),
    ({"targets": [{"target": "jetson", "profile": "jetson-orin-nano"}],
      "recipes": [{"name": "f", "precision": "fp32"}]},
     "cell digits/jetson@jetson-orin-nano/f: target 'jetson' has no candidate with precision fp32"),
    ({"targets": [{"target": "cpu", "profile": "jetson-orin-nano"}]}, "describes a jetson device, not target 'cpu'"),
    ({"recipes": [{"name": "a", "precison": "int8"}]}, "recipe a: unknown setting(s) precison"),
    ({"recipes": [{"name": "a", "target": "cpu"}]}, "recipe a: target and profile come from 'targets'"),
    ({"recipes": [{"name": "a/b"}]}, "recipe name 'a/b'"),
    ({"recipes": [{"name": "a"}, {"name": "a"}]}, "recipe 'a' is named twice"),
    ({"recipes": []}, "'recipes' is missing or empty"),
])
def test_errors_name_the_problem(tmp_path, change, message):
    with pytest.raises(SweepError) as e:
        load_sweep(write(tmp_path, {**BASE, **change}))
    assert message in str(e.value)
    assert "\n" not in str(e.value) and str(e.value).startswith(str(tmp_path / "sweep.yaml"))


def test_onnx_model_for_a_pytorch_only_target(tmp_path):
    with pytest.raises(SweepError, match="target 'mobile' converts PyTorch models and the model is ONNX"):
        load_sweep(write(tmp_path, {**BASE, "models": {"net": {"model": str(onnx_file(tmp_path / "net.onnx"))}},
                                    "targets": ["mobile"], "recipes": [{"name": "fp32", "precision": "fp32"}]}))


def test_cli_prints_one_line_and_exits_2(tmp_path, edgeml_cli):
    result = edgeml_cli("sweep", write(tmp_path, {**BASE, "targets": ["fpga"]}), "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "unknown target 'fpga'" in result.stderr
    assert not (tmp_path / "out").exists()


def test_an_existing_out_needs_resume(tmp_path, edgeml_cli):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("")
    result = edgeml_cli("sweep", write(tmp_path, BASE), "-o", tmp_path / "out")
    assert result.exit_code == 2 and "pass --resume to continue the sweep there" in result.stderr


def test_the_readme_shows_the_example_as_it_is():
    readme = (EXAMPLE.parents[1] / "README.md").read_text()
    assert f"```yaml\n{EXAMPLE.read_text()}```" in readme
    assert len(load_sweep(EXAMPLE).cells) == 4


def test_a_sweep_with_a_failed_cell_exits_non_zero(tmp_path, edgeml_cli):
    from edgeml.sweep.cells import failed_row
    from edgeml.sweep.journal import Journal

    path = write(tmp_path, BASE)
    cell = load_sweep(path).cells[0]
    out = tmp_path / "out"
    Journal(out, resume=False).record(cell, failed_row(cell, "the model needs 9 GB; the profile has 4 GB", None, 1.0))
    result = edgeml_cli("sweep", path, "-o", out, "--resume")          # every cell journaled: Ray is not started
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == f"error: 1 of 1 cells failed ({cell.id}): see sweep.md"
    assert "the model needs 9 GB" in (out / "sweep.md").read_text()
