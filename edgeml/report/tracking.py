"""Experiment tracking of `optimize` runs (`--track mlflow`).

One MLflow run per optimize run: the effective recipe, target and device profile as params; the
selected row's quality, drop and latency as metrics (`.measured` = timed on the build machine,
`.predicted` = the roofline estimate for the profile's device); the edgeml version and source
hash as tags; the bundle folder and report.md as artifacts. The tracking URI is MLFLOW_TRACKING_URI,
else a file store in ./mlruns; the experiment is MLFLOW_EXPERIMENT_NAME, else "edgeml".
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgeml.errors import EdgemlError, first_line
from edgeml.progress import Reporter
from edgeml.report.record import Run

TRACKERS = ("mlflow",)
EXPERIMENT = "edgeml"
PARAM_LIMIT = 6000     # MLflow's longest param value


def check_tracker(tracker: str) -> None:
    """Fail before a long run, not after it, when the tracker is unknown or not installed."""
    if tracker not in TRACKERS:
        raise EdgemlError(f"--track {tracker}: trackers available: {', '.join(TRACKERS)}")
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise EdgemlError("--track mlflow needs MLflow: pip install 'edgeml[track]'") from None


def track(run: Run, out: Path, tracker: str, reporter: Reporter | None = None, *, parent: str | None = None) -> str:
    """Log the finished run in OUT to `tracker` (as a child of the run `parent`, if given); return its run id."""
    check_tracker(tracker)
    from mlflow.entities import Metric, Param, RunTag

    client, uri, name, experiment_id = _experiment()
    tags = {"edgeml.version": run.edgeml_version, "edgeml.source_sha256": run.source["sha256"],
            "edgeml.candidate": run.selected.name, "edgeml.output": str(out)}
    if parent is not None:
        tags["mlflow.parentRunId"] = parent
    try:
        tracked = client.create_run(experiment_id, run_name=f"{run.source['name']}-{run.target}", tags=tags)
    except Exception as e:
        raise EdgemlError(f"cannot log to MLflow at {uri}: {first_line(e)}") from e
    run_id = tracked.info.run_id
    now = int(time.time() * 1000)
    try:
        client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics(run).items()],
                         params=[Param(k, v) for k, v in params(run).items()],
                         tags=[RunTag("edgeml.selection", run.selection.get("reason", ""))])
        client.log_artifacts(run_id, str(out / "bundle"), "bundle")
        client.log_artifact(run_id, str(out / "report.md"))
    except Exception as e:
        client.set_terminated(run_id, "FAILED")
        raise EdgemlError(f"MLflow run {run_id} at {uri} failed: {first_line(e)}") from e
    client.set_terminated(run_id, "FINISHED")
    if reporter is not None and reporter.console is not None:
        reporter.console.print(f"Tracked as MLflow run {run_id} (experiment {name}, {uri})")
    return run_id


@contextmanager
def parent_run(run_name: str, tags: dict[str, str]) -> Iterator[tuple[str, str, str]]:
    """An MLflow run that other runs are logged under (`track(..., parent=ID)`), finished when the block ends:
    (its run id, the tracking URI, the experiment name)."""
    check_tracker("mlflow")
    client, uri, name, experiment_id = _experiment()
    try:
        run_id = client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
    except Exception as e:
        raise EdgemlError(f"cannot log to MLflow at {uri}: {first_line(e)}") from e
    status = "FAILED"
    try:
        yield run_id, uri, name
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status)


def _experiment():
    """(client, tracking URI, experiment name, experiment id): MLFLOW_TRACKING_URI, else ./mlruns; the experiment
    MLFLOW_EXPERIMENT_NAME, else edgeml (created when missing)."""
    from mlflow.tracking import MlflowClient

    uri = os.environ.get("MLFLOW_TRACKING_URI") or Path("mlruns").resolve().as_uri()
    if uri.startswith("file:"):
        # MLflow 3 refuses its file store unless told it is wanted; it is the default here.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
        experiment = client.get_experiment_by_name(name)
        return client, uri, name, experiment.experiment_id if experiment else client.create_experiment(name)
    except Exception as e:
        raise EdgemlError(f"cannot log to MLflow at {uri}: {first_line(e)}") from e


def params(run: Run) -> dict[str, str]:
    """The effective recipe (flattened: recipe.prune.ratio, ...), the target and the device profile."""
    flat = {"target": run.target, "profile": run.profile["name"] if run.profile else "none (this machine)"}
    _flatten("recipe", run.config["recipe"], flat)
    return {k: v[:PARAM_LIMIT] for k, v in flat.items()}


def metrics(run: Run) -> dict[str, float]:
    """The selected row's numbers; latencies carry `.measured` or `.predicted` so they never mix."""
    row = run.selected
    metric = run.data["quality_metric"]
    values = {f"selected.{metric}": row.metrics[metric], "selected.quality_drop": row.quality_drop}
    if row.latency is not None:
        values.update({"selected.p50_ms.measured": row.latency["p50_ms"],
                       "selected.p90_ms.measured": row.latency["p90_ms"],
                       "selected.throughput_per_s.measured": row.latency["throughput_per_s"]})
    if (row.predicted or {}).get("ms") is not None:
        values["selected.p50_ms.predicted"] = row.predicted["ms"]
    if row.size_bytes is not None:
        values["selected.size_mb"] = row.size_bytes / 1e6
    return {k: float(v) for k, v in values.items() if v is not None}


def _flatten(prefix: str, value, into: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}", item, into)
    else:
        into[prefix] = "null" if value is None else str(value)
