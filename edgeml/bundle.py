"""The bundle: the selected artifact plus a manifest that says what it is and what it measured.

`manifest.json` lists every file with its sha256 and size, the inputs and outputs, the
preprocessing, the backend and runtime settings needed to run it, the metrics measured at
build time and the lineage (source model and data hashes, edgeml version).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgeml.hashing import sha256_file
from edgeml.record import Row, Run
from edgeml.specs import TensorSpec
from edgeml.targets.base import Artifact

FORMAT_VERSION = 1


def write_bundle(folder: Path, artifact: Artifact, row: Row, run: Run,
                 inputs: list[TensorSpec], outputs: list[TensorSpec],
                 preprocessing: dict | None) -> dict:
    """Move `artifact` into `folder` and write its manifest; return the manifest."""
    os.rename(artifact.folder, folder)
    artifact.folder = folder
    files = [{"path": p.relative_to(folder).as_posix(), "sha256": sha256_file(p), "size": p.stat().st_size}
             for p in artifact.files]
    manifest = {
        "format": "edgeml-bundle",
        "format_version": FORMAT_VERSION,
        "edgeml_version": run.edgeml_version,
        "created": run.created,
        "target": run.target,
        "candidate": row.name,
        "backend": {"name": artifact.backend, "version": row.backend_version},
        "precision": artifact.precision,
        "entry": artifact.entry,
        "runtime_config": artifact.runtime_config,
        "inputs": [s.to_dict() for s in inputs],
        "outputs": [s.to_dict() for s in outputs],
        "preprocessing": preprocessing,
        "metrics": {
            "quality_metric": run.data["quality_metric"],
            **{k: v for k, v in row.metrics.items() if k != "per_class"},    # per class: in report.json
            "quality_drop": row.quality_drop,
            "latency_ms": None if row.latency is None else {k: row.latency[k] for k in ("p50_ms", "p90_ms", "p99_ms")},
            "measured_on": None if row.latency is None else {"cpu": run.machine["cpu"],
                                                             "threads": run.machine["threads"], "batch": 1},
            "predicted": row.predicted,
        },
        "profile": None if run.profile is None else {k: run.profile[k] for k in ("name", "display_name", "runtimes")},
        "status": row.status,
        "next_step": row.reason if row.status in ("predicted", "needs device") else None,
        "lineage": {
            "source": {k: run.source[k] for k in ("kind", "name", "sha256")},
            "calibration_data_sha256": run.data["calibration"]["sha256"],
            "evaluation_data_sha256": run.data["evaluation"]["sha256"],
            "training_data_sha256": (run.data.get("training") or {}).get("sha256"),
            "recipe": run.config["recipe"],
            "seed": run.config["recipe"]["seed"],
        },
        "files": files,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
