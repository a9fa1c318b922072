"""`edgeml report`: markdown, JSON and self-contained HTML renderings of one real `optimize` run,
and of copies of its record edited to show what a run can hold (a class that drops, a search)."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import onnx
import pytest

from edgeml.compress.quantize.accuracy import SearchResult, Trial
from edgeml.measure.evaluate import compare
from edgeml.measure.uncertainty import resolution

EXTERNAL = re.compile(r"""(src|href)=["']?(https?:|//)|<link|<script|@import|url\((?!#)""")


@pytest.fixture(scope="module")
def run_dir(demo_run, tmp_path_factory):
    """A copy of the session's optimize run of the digits example (demo_run): `edgeml report` writes into it."""
    return shutil.copytree(demo_run[1], tmp_path_factory.mktemp("report") / "digits")


def record(folder):
    return json.loads((folder / "report.json").read_text())


def edited_copy(run_dir, tmp_path, edit):
    """A copy of the run folder whose report.json `edit(record)` changed."""
    folder = tmp_path / "run"
    shutil.copytree(run_dir, folder)
    run = record(folder)
    edit(run)
    (folder / "report.json").write_text(json.dumps(run))
    return folder


def section(page: str, title: str) -> str:
    start = page.index(f"<h2>{title}</h2>")
    end = page.find("<h2>", start + 1)
    return page[start:end if end > 0 else None]


def test_markdown_is_report_md(edgeml_cli, run_dir, tmp_path):
    from edgeml.report.format import ms

    result = edgeml_cli("report", run_dir)
    assert result.exit_code == 0, result.stderr
    md = (run_dir / "report.md").read_text()
    assert result.stdout == md
    metric = record(run_dir)["data"]["quality_metric"]
    assert (f"| candidate | backend | precision | {metric} | drop | p50 ms (measured here) | p90 ms | size MB | "
            "status |") in result.stdout
    assert "## Per-class accuracy" in md and "## Per-layer time" in md
    steps = record(run_dir)["steps"]
    assert "## Where the time went" in md and f"| {max(steps, key=lambda s: s['seconds'])['step']} |" in md
    paired = record(run_dir)["selection"]["paired"]
    if paired:       # the close contenders show the p50 of the rounds that decided, marked
        for name, timed in paired["rows"].items():
            cell = re.escape(f"| {ms(timed['p50_ms'])} (rounds) |")
            assert re.search(rf"\| (\*\*)?{re.escape(name)}(\*\* ✓)? \|[^\n]*{cell}", md), name
        assert "p50 marked (rounds)" in md

    out = tmp_path / "r.md"
    result = edgeml_cli("report", run_dir, "--format", "md", "-o", out)
    assert result.exit_code == 0 and result.stdout.strip() == str(out) and out.read_text() == md


def test_json_is_the_record_as_written(edgeml_cli, run_dir):
    result = edgeml_cli("report", run_dir, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (run_dir / "report.json").read_text()
    assert json.loads(result.stdout) == record(run_dir)


def test_per_class_and_kl_are_recorded(run_dir):
    rows = {r["name"]: r for r in record(run_dir)["rows"]}
    for row in rows.values():
        if row["status"] == "ok":
            assert sorted(row["metrics"]["per_class"], key=int) == [str(c) for c in range(10)]
            assert row["metrics"]["kl"] >= 0
    assert rows["original"]["metrics"]["kl"] == pytest.approx(0, abs=1e-12)


def test_compare_kl_and_per_class():
    ref = [np.log(np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]))]
    out = [np.log(np.array([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8]]))]
    m = compare(out, ref, np.array([1, 0, 0]))
    assert m["kl"] == pytest.approx((0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1)) / 3)
    assert m["per_class"] == {"0": 0.5, "1": 0.0}
    assert "per_class" not in compare(out, ref, None)
    assert "kl" not in compare([np.zeros((3, 1))], [np.ones((3, 1))], None)          # not a classifier


def test_layer_times_of_the_selected_onnx_model(run_dir):
    run = record(run_dir)
    times = run["layer_times"]
    chosen = next(r for r in run["rows"] if r["selected"])
    assert times["artifact"] == chosen["name"] and times["backend"] == chosen["backend"] == "onnxruntime"
    assert times["reason"] is None and times["threads"] == 1 and times["runs"] >= 3
    layers = times["layers"]
    assert sum(x["share"] for x in layers) == pytest.approx(1, abs=1e-3)
    assert [x["ms"] for x in layers] == sorted((x["ms"] for x in layers), reverse=True)
    assert sum(o["count"] for o in times["ops"]) == len(layers)
    assert 0 < times["kernels_ms"] <= times["run_ms"]
    nodes = {n.name: n.op_type for n in onnx.load(str(run_dir / "bundle" / "model.onnx")).graph.node}
    from_model = [x for x in layers if not x["added_by_runtime"]]
    assert sum(x["share"] for x in from_model) > 0.7
    assert all(x["name"] in nodes for x in from_model)
    assert any(nodes[x["name"]] == "Conv" for x in from_model)          # the convolutions are found, fused or not


def test_layer_times_name_why_other_backends_have_none():
    from pathlib import Path

    from edgeml.pipeline.layer_times import layer_times
    from edgeml.report.record import Row
    from edgeml.runtimes.base import Artifact

    row = Row("openvino-int8", "openvino", "int8", "candidate", latency={"p50_ms": 1.0})
    times = layer_times(row, Artifact("openvino", "int8", Path("nowhere"), "model.xml"), {}, 2)
    assert times["layers"] is None and "openvino" in times["reason"]
    row = Row("tensorrt-int8", "tensorrt", "int8", "candidate", status="predicted")
    times = layer_times(row, Artifact("tensorrt", "int8", Path("nowhere"), "model.onnx"), {}, 2)
    assert times["layers"] is None and "device" in times["reason"]


def test_html_is_one_self_contained_file(edgeml_cli, run_dir):
    result = edgeml_cli("report", run_dir, "--format", "html")
    assert result.exit_code == 0, result.stderr
    path = run_dir / "report.html"
    assert result.stdout.strip() == str(path)
    page = path.read_text()
    assert not EXTERNAL.search(page)
    assert page.count("<svg") == 1 and "Pareto front" in page
    run = record(run_dir)

    candidates = section(page, "Candidates")
    assert "<th>p50 ms (measured here)</th>" in candidates and "<th>status</th>" in candidates
    for r in run["rows"]:
        assert f"<td>{r['name']}</td>" in candidates or f"<strong>{r['name']}</strong> ✓" in candidates
    assert 'class="selected"' in candidates and "measured, selected" in candidates
    assert "skipped: " in candidates

    layers = section(page, "Per-layer time")
    shares = [float(s) for s in re.findall(r'--share: [\d.]+%">([\d.]+) %</td>', layers)]
    times = run["layer_times"]
    assert len(shares) == len(times["layers"]) + len(times["ops"])            # all of them: digits has < 15
    assert sum(shares) == pytest.approx(200, abs=1)                            # layers, then op types
    assert all(f"<td>{x['name']}" in layers for x in times["layers"])

    classes = section(page, "Per-class accuracy")
    assert re.findall(r'<tr(?: class="flagged")?><td>(\d+)</td>', classes) == [str(c) for c in range(10)]


def test_a_class_that_drops_is_flagged(edgeml_cli, run_dir, tmp_path):
    def drop_class_7(run):
        chosen = next(r for r in run["rows"] if r["selected"])
        chosen["metrics"]["per_class"]["7"] -= 0.3
    folder = edited_copy(run_dir, tmp_path, drop_class_7)
    md = edgeml_cli("report", folder).stdout
    per_class = md[md.index("## Per-class accuracy"):md.index("## Per-layer time")]
    assert "**class 7**" in per_class and "flagged" in per_class
    assert re.search(r"\| 7 \| [\d.]+ % \| [\d.]+ % \| \+[\d.]+ pt \| yes \|", per_class)

    assert edgeml_cli("report", folder, "--format", "html").exit_code == 0
    classes = section((folder / "report.html").read_text(), "Per-class accuracy")
    flagged = re.findall(r'<tr class="flagged"><td>(\d+)</td>', classes)
    assert flagged == ["7"] and "<strong>class 7</strong>" in classes


def test_the_accuracy_search_shows_its_sensitivity_table(edgeml_cli, run_dir, tmp_path):
    coarse = resolution(50, "accuracy", 0.01, "the calibration data")

    def add_search(run):
        plain = next(r for r in run["rows"] if r["name"] == "onnxruntime-int8")
        trials = [Trial((), 0.90, 0.08, 0.02, 180_000, "all layers quantized"),
                  Trial(("node_linear",), 0.975, 0.005, 0.021, 190_000, "fallback step 1", pareto=True)]
        result = SearchResult(trials[1], True, "budget met",
                              [{"layer": "node_linear", "op": "Gemm", "drop_when_only_this_is_int8": 0.07},
                               {"layer": "node_conv2d", "op": "Conv", "drop_when_only_this_is_int8": 0.001}],
                              trials, 3.2, resolution=coarse)
        run["tuning"]["onnxruntime-int8"] = {**result.to_dict(), "metric": "accuracy", "data": "calibration data",
                                             "row": "onnxruntime-int8-mixed"}
        run["rows"].append({**plain, "name": "onnxruntime-int8-mixed", "precision": "int8+fp32", "selected": False})
    folder = edited_copy(run_dir, tmp_path, add_search)
    md = edgeml_cli("report", folder).stdout
    assert "## Accuracy budget: onnxruntime-int8" in md
    assert "| node_linear | Gemm | +7.00 pt |" in md and "onnxruntime-int8-mixed" in md
    assert ("- **Too few samples to resolve the budget:** the calibration data has 50 samples: accuracy moves "
            "in steps of 2 points, coarser than the 1-point budget") in md

    assert edgeml_cli("report", folder, "--format", "html").exit_code == 0
    search = section((folder / "report.html").read_text(), "Accuracy budget: onnxruntime-int8")
    assert "<th>accuracy drop when only this layer is INT8</th>" in search
    assert search.index("node_linear") < search.index("node_conv2d")       # most sensitive first
    assert "<li><strong>Too few samples to resolve the budget:</strong> the calibration data has 50" in search


def test_drops_carry_their_interval_and_a_coarse_evaluation_set_is_named(edgeml_cli, run_dir, tmp_path):
    def judged_on_64(run):
        run["selection"]["max_accuracy_drop"] = 0.01
        for r in run["rows"]:
            if r["status"] == "ok":
                r["quality_drop_ci95"] = [0.0, 0.0] if r["role"] == "reference" else [0.0, 0.03125]
                r["quality_test"] = {"samples": 64, "step": 1 / 64, "worse": 0, "better": 0, "mcnemar_p": 1.0}
        chosen = next(r for r in run["rows"] if r["selected"])
        chosen.update(quality_drop=0.015625, quality_drop_ci95=[-0.015625, 0.046875],
                      quality_test={"samples": 64, "step": 1 / 64, "worse": 3, "better": 2, "mcnemar_p": 1.0})
    folder = edited_copy(run_dir, tmp_path, judged_on_64)
    run = record(folder)
    assert run["data"]["quality_metric"] == "accuracy"
    name = next(r["name"] for r in run["rows"] if r["selected"])
    md = edgeml_cli("report", folder).stdout
    table = md[:md.index("Latency is measured")]
    assert f"| **{name}** ✓ | onnxruntime | int8 |" in table and "| +1.56 pt (95% CI -1.56 to +4.69 pt) |" in table
    assert "| +0.00 pt (95% CI +0.00 to +3.12 pt) |" in table                 # the other candidates
    assert "(drop +1.56 pt; 95% CI -1.56 to +4.69 pt)" in md                  # the summary
    assert ("> **Too few evaluation samples for the budget:** the evaluation set has 64 samples: accuracy moves in "
            "steps of 1.6 points, coarser than the 1-point budget (one changed sample already breaks it); give at "
            "least 100 samples to resolve it.") in table
    assert (f"The 95% CI of {name}'s drop (-1.56 to +4.69 pt) contains the budget (1.00 pt): these 64 evaluation "
            "samples cannot tell whether it is within") in table
    assert (f"{name} vs the original on 64 evaluation samples: 3 became wrong, 2 became right; exact McNemar "
            "p = 1 (the chance") in table

    assert edgeml_cli("report", folder, "--format", "html").exit_code == 0
    candidates = section((folder / "report.html").read_text(), "Candidates")
    assert "<td>+1.56 pt (95% CI -1.56 to +4.69 pt)</td>" in candidates
    assert '<p class="warning"><strong>Too few evaluation samples for the budget:</strong> the evaluation set ' \
           "has 64 samples" in candidates
    assert "exact McNemar p = 1" in candidates


def test_records_without_drop_intervals_still_render(edgeml_cli, run_dir, tmp_path):
    def old(run):
        for r in run["rows"]:
            r.pop("quality_drop_ci95", None)
            r.pop("quality_test", None)
        run["selection"].pop("paired")                       # nor the close contenders timed again
        run["selection"]["reason"] = "the fastest candidate (p50 measured here) whose accuracy drop is within 0.01"
    folder = edited_copy(run_dir, tmp_path, old)
    md = edgeml_cli("report", folder).stdout
    assert "95% CI" not in md[:md.index("Latency is measured")]
    assert "McNemar" not in md and "Too few evaluation samples" not in md
    assert re.search(r"\| [+-]\d+\.\d\d pt \| [\d.]+ \| [\d.]+ \| [\d.]+ \| measured, selected \|", md)
    assert edgeml_cli("report", folder, "--format", "html").exit_code == 0


def test_a_search_that_did_not_run_says_why(edgeml_cli, run_dir, tmp_path):
    reason = "openvino-int8 is within the budget and already faster (0.100 ms) than onnxruntime-int8 (0.200 ms)"

    def skipped(run):
        run["tuning"]["onnxruntime-int8"] = {"reason": reason}
    folder = edited_copy(run_dir, tmp_path, skipped)
    md = edgeml_cli("report", folder).stdout
    assert f"- plain INT8 broke the budget on the evaluation data; no search ran: {reason}" in md
    assert edgeml_cli("report", folder, "--format", "html").exit_code == 0
    assert "no search ran" in section((folder / "report.html").read_text(), "Accuracy budget: onnxruntime-int8")


def test_device_only_rows_get_their_own_panel(edgeml_cli, run_dir, tmp_path):
    def on_device(run):
        run["profile"] = {"name": "orin", "display_name": "Jetson Orin"}
        for r in run["rows"]:
            r["predicted"] = {"ms": 0.5}
        row = next(r for r in run["rows"] if r["name"] == "onnxruntime-fp16")
        row.update(status="predicted", latency=None, reason="runs on the device")
    folder = edited_copy(run_dir, tmp_path, on_device)
    assert edgeml_cli("report", folder, "--format", "html", "-o", tmp_path / "x.html").exit_code == 0
    page = (tmp_path / "x.html").read_text()
    assert "Predicted for Jetson Orin: an estimate, not measured" in page and "right-hand panel" in page
    assert "<th>p50 ms (predicted, orin)</th>" in page and "predicted, within budget" in page


@pytest.mark.parametrize("case", ["missing", "no record", "bad json", "other record"])
def test_errors_are_one_line(edgeml_cli, tmp_path, case):
    folder = tmp_path / "run"
    if case != "missing":
        folder.mkdir()
    if case == "bad json":
        (folder / "report.json").write_text('{"rows": [')
    if case == "other record":
        (folder / "report.json").write_text('{"command": "prune"}')
    result = edgeml_cli("report", folder, "--format", "html")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert not (folder / "report.html").exists()


def test_the_close_contenders_timed_again_are_a_table_with_their_verdicts():
    from edgeml.report.tables import paired_note, paired_table

    run = {"selection": {"candidate": "fp32", "paired": {
        "rounds": 5, "faster_above": 1.02, "fastest": "int8", "tied": ["fp32", "int8"],
        "rows": {"int8": {"p50_ms": 1.0, "p50_ci95_ms": [0.98, 1.02], "speedup_of_fastest": None},
                 "fp32": {"p50_ms": 1.01, "p50_ci95_ms": [0.99, 1.03],
                          "speedup_of_fastest": {"ratio": 1.01, "ci95": [0.99, 1.03]}},
                 "fp16": {"p50_ms": 1.2, "p50_ci95_ms": [1.18, 1.22],
                          "speedup_of_fastest": {"ratio": 1.2, "ci95": [1.15, 1.25]}}}}}}
    note = paired_note(run)
    assert "5 alternating rounds" in note and "own ratios" in note and "tied with it: fp32." in note
    assert "median speed-up is above" not in note                       # a record from before that rule
    header, rows = paired_table(run)
    assert header[2] == "speed-up of int8 (95% CI)"
    assert rows == [["int8", "1.000 (0.980–1.020)", "—", "fastest"],
                    ["fp32", "1.010 (0.990–1.030)", "1.01x (0.99–1.03)", "selected, tied"],
                    ["fp16", "1.200 (1.180–1.220)", "1.20x (1.15–1.25)", "slower"]]
    assert paired_note({"selection": {"paired": None}}) is None
    # the fastest alone: no row is "tied" with itself; both rules that make a row faster are named
    run["selection"]["paired"].update(tied=["int8"], clearly_faster_above=1.05)
    note = paired_note(run)
    assert "no row is tied with int8" in note and "int8, int8" not in note
    assert "or when its median speed-up is above 1.05x" in note


def test_the_headline_speed_up_comes_from_the_rounds_that_decided_when_the_original_was_timed_there():
    from edgeml.report.tables import summary

    def row(name, role, p50, selected=False):
        return {"name": name, "role": role, "backend": "openvino" if name != "original" else "onnxruntime",
                "backend_version": "", "precision": "fp32", "status": "ok", "selected": selected,
                "latency": {"p50_ms": p50}, "metrics": {"agreement": 1.0}, "quality_drop": 0.0}

    # timed once each, the selected row looked slower than the original; timed together, it was faster
    rows = [row("original", "reference", 0.913), row("openvino-fp32", "candidate", 0.965, selected=True)]
    paired = {"rounds": 9, "faster_above": 1.02, "fastest": "openvino-fp32", "tied": ["openvino-fp32"],
              "rows": {"openvino-fp32": {"p50_ms": 0.979, "p50_ci95_ms": [0.96, 1.01], "speedup_of_fastest": None},
                       "original": {"p50_ms": 1.027, "p50_ci95_ms": [1.01, 1.05],
                                    "speedup_of_fastest": {"ratio": 1.0516, "ci95": [1.039, 1.062]}}}}
    run = {"data": {"quality_metric": "agreement"}, "rows": rows, "profile": None,
           "selection": {"candidate": "openvino-fp32", "within_budget": True, "paired": paired, "reason": "r"}}
    headline = summary(run)[0]
    assert "1.05x (95% CI 1.04–1.06, timed together) vs the original (onnxruntime)" in headline, headline
    run["selection"]["paired"] = None                            # no second timing: the candidate table's p50s
    assert "speed-up (p50) 0.95x vs the original" in summary(run)[0]
