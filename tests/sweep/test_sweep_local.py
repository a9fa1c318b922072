"""The README's example sweep, each cell timed briefly, on the Ray that `edgeml sweep` starts by itself: SIGKILL the
driver after a cell has finished, then `--resume` runs only the cells that are missing (each logged to MLflow as a
child of the sweep's run), and a second `--resume` runs none and writes the same table."""

from __future__ import annotations

import json
import signal
import subprocess

from sweeps import cells_run, sweep_command, wait_for

from edgeml.sweep.spec import load_sweep


def mlflow_children(store: str) -> dict[str, str]:
    """The runs logged under the one sweep run in the MLflow store: run id -> the cell folder it logged."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if "edgeml.sweep" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    return {r.info.run_id: r.data.tags["edgeml.output"].split("/cells/")[1] for r in runs
            if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}


def test_example_sweep_resumes_after_the_driver_is_killed(tmp_path, ray_processes, monkeypatch, quick_example):
    example = quick_example()
    out = tmp_path / "out"
    journal = out / "journal"
    command = sweep_command(example, out)
    driver = subprocess.Popen(command, env=ray_processes.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        wait_for(lambda: journal.exists() and any(journal.glob("*.json")) or driver.poll() is not None, 300,
                 "a cell to finish")
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        ray_processes.kill()                 # the driver's Ray, which it can no longer stop
    before = {p.name: p.read_bytes() for p in journal.glob("*.json")}
    cells = [c.id for c in load_sweep(example).cells]
    finished = {json.loads(b)["row"]["cell"] for b in before.values()}
    assert 1 <= len(finished) < len(cells)

    store = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    tracked = {**ray_processes.env, "MLFLOW_TRACKING_URI": store, "MLFLOW_ALLOW_FILE_STORE": "true"}
    resumed = subprocess.run(command + ["--resume", "--track", "mlflow"], env=tracked, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert cells_run(resumed.stderr) == set(cells) - finished
    children = mlflow_children(store)
    assert sorted(children.values()) == sorted(set(cells) - finished)
    assert {p.name: p.read_bytes() for p in journal.glob("*.json") if p.name in before} == before
    record = json.loads((out / "sweep.json").read_text())
    assert [c["cell"] for c in record["cells"]] == cells
    assert all(c["status"] == "done" for c in record["cells"])
    for cell in cells:
        assert (out / "cells" / cell / "bundle" / "manifest.json").is_file()
    cpu = [c for c in record["cells"] if c["target"] == "cpu"]
    assert all(c["selected"]["p50_ms"] > 0 and c["cpu"] and c["node"]["id"] for c in cpu)
    held = sorted(span for c in record["cells"] for span in c["timing_slot"]["held"])
    assert len(held) >= 2 * len(cpu)                    # each CPU cell timed its rows in turns ...
    assert all(end <= start for (_, end), (start, _) in zip(held, held[1:]))   # ... never two at once
    table = (out / "sweep.md").read_text()
    assert "### Measured on " in table and "### Predicted for the `jetson-orin-nano` profile" in table
    assert len({c["run_started"] for c in record["cells"]}) == 2 and " | timed in run | " in table   # killed, resumed

    again = subprocess.run(command + ["--resume"], env=ray_processes.env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert cells_run(again.stderr) == set() and f"{len(cells)} of {len(cells)} cells already finished" in again.stderr
    assert (out / "sweep.md").read_text() == table
