"""The sweep tables: latencies of different CPUs are never ranked together; the Pareto front and the best recipe
are found per model and CPU (or device profile, for predicted latencies); failed cells are rows that say why."""

from __future__ import annotations

import json

from edgeml.sweep import results

NODE = {"id": "0123456789abcdef", "ip": "10.0.0.1", "host": "n1"}


def row(cell, *, cpu="CPU A", p50=None, predicted=None, quality=0.98, within=True, target="cpu", profile=None):
    recipe = cell.split("/")[-1]
    return {"cell": cell, "model": "net", "target": target, "profile": profile, "recipe": recipe, "settings": {},
            "status": "done", "node": NODE, "cpu": cpu, "threads": 1, "seconds": 1.0, "metric": "accuracy",
            "budget": 0.01, "profile_name": profile, "within_budget": within,
            "selected": {"name": "onnxruntime-int8", "precision": "int8", "quality": quality, "drop": 0.98 - quality,
                         "drop_ci95": [0.0, 0.01], "p50_ms": p50, "p50_ci95_ms": None if p50 is None else [p50, p50],
                         "predicted_ms": predicted, "size_bytes": 1000, "selected": True}, "rows": []}


def test_groups_pareto_and_best_per_cpu(tmp_path):
    cells = [row("net/cpu/a", p50=1.0, quality=0.97), row("net/cpu/b", p50=2.0, quality=0.98),
             row("net/cpu/c", p50=3.0, quality=0.975),                       # slower and worse than b
             row("net/cpu/d", cpu="CPU B", p50=9.0, quality=0.90, within=False),   # alone on its CPU
             row("net/jetson/a", target="jetson", profile="orin", predicted=0.5),
             {"cell": "net/cpu/e", "model": "net", "target": "cpu", "profile": None, "recipe": "e", "settings": {},
              "status": "failed: the model's weights exceed the device's memory", "node": None, "seconds": None}]
    record = results.build(tmp_path / "sweep.yaml", cells, {"address": "local"})
    front = {r["cell"] for r in record["cells"] if r["pareto"]}
    assert front == {"net/cpu/a", "net/cpu/b", "net/cpu/d", "net/jetson/a"}
    best = {(b["target"], b["group"]): b["recipe"] for b in record["best"]}
    assert best == {("cpu", "cpu: CPU A"): "a", ("cpu", "cpu: CPU B"): None, ("jetson", "profile: orin"): "a"}

    results.write(tmp_path, record)
    markdown = (tmp_path / "sweep.md").read_text()
    assert "### Measured on CPU A" in markdown and "### Measured on CPU B" in markdown
    assert "### Predicted for the `orin` profile" in markdown
    assert "| net/cpu/e | failed: the model's weights exceed the device's memory |" in markdown
    assert "none within its budget" in markdown
    assert json.loads((tmp_path / "sweep.json").read_text())["cells"][0]["pareto"] is True
    page = (tmp_path / "sweep.html").read_text()
    assert page.startswith("<!doctype html>") and "<code>orin</code>" in page and "<script" not in page


def test_cells_timed_in_different_runs_say_which_run_timed_them(tmp_path):
    """After `--resume` redid a cell, its timing and the journaled ones come from different runs: the table says so."""
    first, second = "2025-01-01T10:00:00+00:00", "2025-01-02T09:30:00+00:00"
    cells = [{**row("net/cpu/a", p50=1.0), "run_started": first}, {**row("net/cpu/b", p50=2.0), "run_started": second},
             row("net/cpu/c", p50=3.0)]                        # journaled by an edgeml that did not record its run
    results.write(tmp_path, results.build(tmp_path / "sweep.yaml", cells, {"address": "local"}))
    markdown = (tmp_path / "sweep.md").read_text()
    assert f"Timed in 3 runs of the sweep (`--resume`), started {first}, {second}, unrecorded" in markdown
    header, _, *lines = markdown.split("### Measured on CPU A\n\n")[1].split("\n\n")[0].splitlines()
    assert "| node | timed in run |" in header
    assert [line.split(" | ")[-2] for line in lines] == [first, second, "unrecorded"]
    assert "timed in run" in (tmp_path / "sweep.html").read_text()

    results.write(tmp_path, results.build(tmp_path / "sweep.yaml", [cells[0]], {"address": "local"}))
    assert "timed in run" not in (tmp_path / "sweep.md").read_text()        # one run: nothing to tell apart
