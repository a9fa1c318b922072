"""Language models in a sweep: SWEEP.yaml's checks of a language-model entry (no Ray), and the row and tables the
sweep makes of a real `edgeml optimize` run of the tiny LM (the session's lm_run): ranked on decode ms per token and
the perplexity increase, lower being better for both, in a section of its own beside other models."""

from __future__ import annotations

import copy
import json

import pytest
import yaml
from test_sweep_results import row as model_row

from edgeml.errors import EdgemlError
from edgeml.sweep import results
from edgeml.sweep.cells import cell_row
from edgeml.sweep.schedule import sweep
from edgeml.sweep.spec import Cell, SweepError, cell_recipe, load_sweep

NODE = {"id": "0123456789abcdef", "ip": "10.0.0.1", "host": "n1"}


@pytest.fixture
def lm_files(tmp_path):
    """What the sweep file's checks look at: a folder with a config.json (what makes a model folder a language
    model; the cells load it), a GGUF file, and a folder of text."""
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "config.json").write_text("{}")
    (tmp_path / "small.gguf").write_bytes(b"GGUF")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("Some prose to judge a language model on.")
    return tmp_path


def write(folder, models, targets=("cpu",), recipes=({"name": "int8", "precision": "int8"},)):
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({"models": models, "targets": list(targets), "recipes": list(recipes)}))
    return path


LM = {"model": "lm", "calib_data": "text", "eval_data": "text"}


def test_a_language_model_entry_makes_language_model_cells(lm_files):
    sweep_file = write(lm_files, {"lm": LM, "gguf": {"model": "small.gguf"}, "digits": {"example": "digits"}},
                       recipes=[{"name": "int8", "precision": "int8", "max_ppl_increase": 0.03}])
    cells = {c.model: c for c in load_sweep(sweep_file).cells}
    assert cells["lm"].language_model and cells["gguf"].language_model and not cells["digits"].language_model
    assert cells["lm"].given == {"model": str(lm_files / "lm"), "calib_data": str(lm_files / "text"),
                                 "eval_data": str(lm_files / "text")}
    assert cells["gguf"].given == {"model": str(lm_files / "small.gguf")}
    assert cell_recipe(cells["lm"]).max_ppl_increase == 0.03


@pytest.mark.parametrize("change, message", [
    ({"weights": "w.pt"}, "models.lm: weights does not apply to a language model (it takes model, calib_data, "
                          "eval_data"),
    ({"example": "digits", "input_shape": "x:1,3"}, "models.lm: example, input_shape do not apply"),
    ({"data": "text", "split": 0.3}, "models.lm: data, split do not apply"),
    ({"train_data": "text", "preprocess": "scale:255"}, "models.lm: train_data, preprocess do not apply"),
    ({"eval_data": "empty"}, "models.lm.eval_data: "),
    ({"calib_data": "nothing"}, "models.lm.calib_data: "),
])
def test_a_language_model_entry_takes_text_only(lm_files, change, message):
    (lm_files / "empty").mkdir()
    with pytest.raises(SweepError) as e:
        load_sweep(write(lm_files, {"lm": {**LM, **change}}))
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("target, profile, precision", [
    ("cpu", None, "fp16"),                              # a precision the target's language-model builds lack
    ("jetson", "raspberry-pi-5", "int4"),               # builds run on the device: a profile of another target
])
def test_a_cell_optimize_would_refuse_says_what_optimize_says(lm_files, target, profile, precision):
    from edgeml.pipeline.optimize import optimize

    with pytest.raises(EdgemlError) as refused:          # before loading anything
        optimize(str(lm_files / "lm"), target=target, profile=profile, precision=precision, out=lm_files / "never")
    entry = target if profile is None else {"target": target, "profile": profile}
    with pytest.raises(SweepError) as e:
        load_sweep(write(lm_files, {"lm": LM}, [entry], [{"name": "r", "precision": precision}]))
    where = target if profile is None else f"{target}@{profile}"
    assert str(e.value).endswith(f"cell lm/{where}/r: {refused.value}") and "\n" not in str(e.value)
    assert not (lm_files / "never").exists()


def test_a_profile_applies_to_builds_that_run_on_the_device(lm_files):
    cells = load_sweep(write(lm_files, {"lm": LM}, [{"target": "jetson", "profile": "jetson-orin-nx"}],
                             [{"name": "int4", "precision": "int4"}])).cells
    assert [c.id for c in cells] == ["lm/jetson@jetson-orin-nx/int4"]


def test_a_profile_that_optimize_would_ignore_is_refused(lm_files):
    with pytest.raises(SweepError, match="target 'cpu' times language models on the node that runs the cell, so a "
                                         "device profile does not apply"):
        load_sweep(write(lm_files, {"lm": LM}, [{"target": "cpu", "profile": "raspberry-pi-5"}]))


def test_track_is_refused_with_language_model_cells(lm_files):
    with pytest.raises(SweepError, match="--track mlflow does not log language-model runs .* sweep lm apart"):
        sweep(write(lm_files, {"lm": LM, "digits": {"example": "digits"}}), lm_files / "out", track="mlflow")
    assert not (lm_files / "out").exists()


def lm_cell(recipe: str) -> Cell:
    return Cell("tiny", "cpu", None, recipe, {"model": "tiny"}, {"precision": "int8", "target": "cpu",
                                                                  "profile": None}, True)


def test_the_row_of_a_language_model_run(lm_run):
    _, report, _ = lm_run
    row = cell_row(lm_cell("int8"), report, NODE, 12.3)
    chosen = next(r for r in report["rows"] if r["selected"])
    rate = chosen["latency"]["decode_tokens_per_s"]
    assert row["kind"] == "language-model" and row["metric"] == "perplexity"
    assert row["budget"] == report["config"]["recipe"]["max_ppl_increase"]
    assert row["within_budget"] == report["selection"]["within_budget"]
    s = row["selected"]
    assert s["name"] == report["selection"]["candidate"] and s["speed"] == "measured"
    assert s["quality"] == chosen["metrics"]["perplexity"] and s["drop"] == chosen["metrics"]["ppl_increase"]
    assert s["drop_ci95"] == chosen["metrics"]["ppl_increase_ci95"]
    assert s["ms_per_token"] == pytest.approx(1000 / rate["median"])
    assert s["ms_per_token_ci95"] == pytest.approx([1000 / rate["ci95"][1], 1000 / rate["ci95"][0]])
    assert s["ms_per_token_ci95"][0] <= s["ms_per_token"] <= s["ms_per_token_ci95"][1]
    assert s["decode_tokens_per_s"] == rate["median"] and s["ttft_ms"]["128"] == chosen["latency"]["ttft_ms"]["128"][
        "median"]
    assert s["p50_ms"] is None and s["size_bytes"] == chosen["size_bytes"]
    assert {r["name"] for r in row["rows"]} == {r["name"] for r in report["rows"]}
    assert results.group({**row, "pareto": False}) == f"cpu: {report['machine']['cpu']}"


def variant(row: dict, recipe: str, *, rate: float, increase: float, within: bool = True) -> dict:
    """The row as if another recipe had selected a build of this decode rate and perplexity increase."""
    other = copy.deepcopy(row)
    other.update(cell=f"tiny/cpu/{recipe}", recipe=recipe, within_budget=within)
    other["selected"].update(ms_per_token=1000 / rate, ms_per_token_ci95=None, decode_tokens_per_s=rate,
                             drop=increase, drop_ci95=None, within_budget=within)
    return other


def test_tables_rank_language_models_on_ms_per_token_and_a_lower_increase(lm_run, tmp_path):
    _, report, _ = lm_run
    real = cell_row(lm_cell("int8"), report, NODE, 12.3)
    rate, increase = real["selected"]["decode_tokens_per_s"], real["selected"]["drop"]
    cells = [real,
             variant(real, "slower-better", rate=rate / 2, increase=increase - 0.01),     # on the front
             variant(real, "slower-worse", rate=rate / 2, increase=increase + 0.01),      # beaten by the real one
             variant(real, "faster-over", rate=rate * 2, increase=0.5, within=False),    # fastest, over its budget
             model_row("net/cpu/int8", p50=1.0)]                                          # another kind of model
    record = results.build(tmp_path / "sweep.yaml", cells, {"address": "local"})
    front = {r["cell"] for r in record["cells"] if r["pareto"]}
    assert front == {"tiny/cpu/int8", "tiny/cpu/slower-better", "tiny/cpu/faster-over", "net/cpu/int8"}
    best = {b["model"]: b["recipe"] for b in record["best"]}
    assert best == {"tiny": "int8", "net": "int8"}                   # the fastest decode within its budget

    results.write(tmp_path, record)
    markdown = (tmp_path / "sweep.md").read_text()
    lm_part, net_part = markdown.split("## tiny (language model: perplexity)")[1].split("## net (accuracy)")
    assert "Ranked on the decode time per token: ms per token = 1000 / the median decode tokens/s" in lm_part
    header = lm_part.split(f"### Measured on {report['machine']['cpu']}\n\n")[1].splitlines()[0]
    assert header.startswith("| target | recipe | candidate | precision | perplexity | increase (95% CI) | decode "
                             "tokens/s | ms per token (1000 / tokens/s) | TTFT 128 ms | size MB | within budget |")
    assert "p50" not in lm_part
    assert f"{real['selected']['quality']:.2f}" in lm_part and f"{rate:.1f}" in lm_part
    assert "| ms per token | decode tokens/s | perplexity increase |" in lm_part
    assert "| p50 ms (measured) |" in net_part and "perplexity" not in net_part
    page = (tmp_path / "sweep.html").read_text()
    assert "<th>ms per token (1000 / tokens/s)</th>" in page and "<th>p50 ms (measured)</th>" in page
    assert json.loads((tmp_path / "sweep.json").read_text())["best"] == record["best"]


def test_a_build_predicted_for_the_device_is_ranked_within_its_profile(lm_run, tmp_path):
    """A target whose language-model builds run on the device alone predicts their speed for its profile: such
    cells are ranked per profile, never with the ones measured here."""
    _, report, _ = lm_run
    report = copy.deepcopy(report)
    chosen = next(r for r in report["rows"] if r["selected"])
    chosen.update(status="predicted", latency=None,
                  predicted={"profile": "jetson-orin-nano", "decode_tokens_per_s": 40.0, "ttft_ms": {"128": 90.0}})
    report["profile"] = {"name": "jetson-orin-nano"}
    row = cell_row(lm_cell("int8"), report, NODE, 1.0)
    assert row["selected"]["speed"] == "predicted" and row["selected"]["ms_per_token"] == 25.0
    record = results.build(tmp_path / "sweep.yaml", [row], {"address": "local"})
    assert record["cells"][0]["group"] == "profile: jetson-orin-nano" and record["best"][0]["recipe"] == "int8"
    results.write(tmp_path, record)
    assert "### Predicted for the `jetson-orin-nano` profile" in (tmp_path / "sweep.md").read_text()
