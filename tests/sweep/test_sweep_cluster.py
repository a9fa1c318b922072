"""The example sweep, one recipe of it (a CPU cell and a Jetson cell), on a two-node Ray cluster on this machine
(`ray start --head` and a worker node): a clean run, then a run whose worker node is killed while it runs a cell.
Ray runs that cell again on the head, and every cell ends with the same results as the clean run's, apart from
timings."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from sweeps import sweep_command, wait_for

pytestmark = pytest.mark.cluster


def outcome(out) -> dict:
    """What a rerun must reproduce: per cell, its status and, per row, its status, quality and drop."""
    cells = json.loads((out / "sweep.json").read_text())["cells"]
    return {c["cell"]: (c["status"], [(r["name"], r["status"], r["quality"], r["drop"]) for r in c["rows"]])
            for c in cells}


def test_killing_the_worker_node_loses_no_cell(tmp_path, ray_processes, cluster, quick_example):
    example = quick_example(recipes={"grid": {"calibration_method": ["minmax"]}})
    clean = subprocess.run(sweep_command(example, tmp_path / "clean", "--address", cluster), env=ray_processes.env,
                           capture_output=True, text=True, timeout=600)
    assert clean.returncode == 0, clean.stderr
    nodes = {c["node"]["id"] for c in json.loads((tmp_path / "clean" / "sweep.json").read_text())["cells"]}
    assert len(nodes) == 2                       # both nodes ran cells

    driver = subprocess.Popen(sweep_command(example, tmp_path / "killed", "--address", cluster),
                              env=ray_processes.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: ray_processes.run_cells(EDGEML_NODE="worker") or driver.poll() is not None, 300,
             "a cell to run on the worker node")
    time.sleep(1)
    killed_at = time.monotonic()
    worker = ray_processes.find(EDGEML_NODE="worker")
    cell = ray_processes.run_cells(EDGEML_NODE="worker")
    ray_processes.kill(EDGEML_NODE="worker")
    stdout, stderr = driver.communicate(timeout=600)
    print(f"killed the worker node's {len(worker)} processes (cell {cell}); the sweep finished "
          f"{time.monotonic() - killed_at:.1f} s later\n{stderr}")
    assert driver.returncode == 0, stderr
    assert cell
    killed = json.loads((tmp_path / "killed" / "sweep.json").read_text())["cells"]
    assert len({c["node"]["id"] for c in killed}) == 1          # the worker's cell ran again on the head
    assert outcome(tmp_path / "killed") == outcome(tmp_path / "clean")
