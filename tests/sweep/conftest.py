"""Ray for the sweep tests: every process a test starts (its sweep drivers, their Ray, a cluster's nodes) carries
one RAY_TMPDIR of its own, so that the test can find, kill and check them by it, and leaves nothing running.

Tests marked `cluster` start a two-node Ray cluster on this machine and kill a node mid-sweep; they run with the
others, and alone with `pytest -m cluster tests/sweep` (`make test-sweep-cluster`).

Under pytest-xdist (`make test`) the tests that start Ray run one at a time, on one worker: two Ray instances on one
machine contend for ports Ray fixes (its client server's, its agents').
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import yaml
from sweeps import EXAMPLE, RAY, RayProcesses

SLOT = json.dumps({"edgeml_timing": 1})
# The head notices a dead node after 3 failed health checks 1 s apart (Ray's default: 5, 3 s apart).
HEALTH_CHECKS = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}


def pytest_configure(config):
    config.addinivalue_line("markers", "cluster: a two-node Ray cluster on this machine (run with -m cluster)")


def pytest_collection_modifyitems(items):
    for item in items:
        if "ray_processes" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("ray"))


@pytest.fixture
def ray_processes():
    processes = RayProcesses()
    try:
        yield processes
    finally:
        processes.kill()
        left = processes.find()
        shutil.rmtree(processes.tmpdir, ignore_errors=True)
        assert not left, f"processes left running: {left}"


@pytest.fixture
def cluster(ray_processes):
    """A head node and a worker node (one CPU and one timing slot each) on this machine: the GCS address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    common = ["--num-cpus=1", f"--resources={SLOT}", "--disable-usage-stats"]
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", *common],
                   env={**ray_processes.env, **HEALTH_CHECKS}, check=True, capture_output=True, timeout=120)
    address = f"127.0.0.1:{port}"
    subprocess.run([RAY, "start", f"--address={address}", *common], env={**ray_processes.env, "EDGEML_NODE": "worker"},
                   check=True, capture_output=True, timeout=120)
    return address


@pytest.fixture
def quick_example(tmp_path, digits):
    """quick_example(**top_keys) -> a copy of the example sweep with each cell timed for 0.05 s (not 0.2 s) and the
    given top-level keys replaced. Its cells find the example's trained weights in the session's cache."""
    def write(**changes) -> Path:
        spec = yaml.safe_load(EXAMPLE.read_text())
        spec["settings"]["measure_seconds"] = 0.05
        path = tmp_path / "sweep.yaml"
        path.write_text(yaml.safe_dump({**spec, **changes}))
        return path
    return write
