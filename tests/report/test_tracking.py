"""`--track mlflow`: the run is logged to MLflow, and MLflow's own CLI lists it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mlflow", reason="MLflow not installed: pip install 'edgeml[track]'")


def test_optimize_tracks_the_run_in_mlflow(tmp_path, monkeypatch, digits, edgeml_cli):
    from mlflow.tracking import MlflowClient

    store = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    result = edgeml_cli("optimize", "--example", "digits", "--precision", "int8", "--threads", "1",
                        "--measure-seconds", "0.05", "-o", tmp_path / "out", "--track", "mlflow")
    assert result.exit_code == 0, result.output
    assert "Tracked as MLflow run" in result.stderr
    run_id = result.stderr.split("Tracked as MLflow run ")[1].split()[0]

    client = MlflowClient(tracking_uri=store)
    run = client.get_run(run_id)
    assert run.data.params["recipe.precision"] == "int8" and run.data.params["target"] == "cpu"
    assert run.data.params["recipe.distill.epochs"] == "30" and run.data.params["profile"] == "none (this machine)"
    assert {"selected.accuracy", "selected.quality_drop", "selected.p50_ms.measured"} <= run.data.metrics.keys()
    assert "selected.p50_ms.predicted" not in run.data.metrics          # nothing was predicted for this machine
    assert run.data.tags["edgeml.version"] == "0.1.0" and len(run.data.tags["edgeml.source_sha256"]) == 64
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"bundle", "report.md"} <= artifacts
    assert "bundle/manifest.json" in {a.path for a in client.list_artifacts(run_id, "bundle")}

    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    listed = subprocess.run([mlflow, "runs", "list", "--experiment-id", run.info.experiment_id],
                            check=False, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert run_id in listed.stdout


def test_unknown_tracker_is_refused():
    from edgeml.errors import EdgemlError
    from edgeml.report.tracking import check_tracker

    with pytest.raises(EdgemlError, match="trackers available: mlflow"):
        check_tracker("wandb")
