"""The bundle: the selected artifact, its reference vectors, a runner, and a manifest that says what it is.

`manifest.json` (format 3, described by manifest.schema.json) lists every file with its sha256 and
size, the inputs and outputs, the preprocessing, the backend and the runtime versions it needs,
the quality measured at build time, the INT8 scheme, the lineage (source model and data hashes,
recipe, seeds, edgeml version), the reference vectors (edgeml.bundle.reference) and the monitoring
statistics `edgeml serve` watches drift with (edgeml.bundle.monitoring). `run.py` (`run_py`:
edgeml/bundle/standalone.py with the code of edgeml/batching.py) runs the bundle with its runtime and numpy alone.

A bundle holds only what the same settings reproduce: two runs on the same machine write it byte for
byte the same. When it was made and how fast it ran are in report.json beside it, not in the bundle.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeml import batching
from edgeml.bundle import reference
from edgeml.bundle.folder import FORMAT_VERSION, MANIFEST
from edgeml.bundle.monitoring import Summaries
from edgeml.hashing import sha256_file
from edgeml.inputs.specs import TensorSpec
from edgeml.report.record import Row, Run
from edgeml.runtimes import BACKENDS
from edgeml.runtimes.base import Artifact, package_version
from edgeml.runtimes.tensorrt import ENGINE, TIMING_CACHE

RUNNER = "run.py"
# What a device writes into a bundle after the fact (build_engine.sh: the engine and trtexec's timing
# cache); `verify` does not count them as files added to the bundle.
DEVICE_FILES = {"tensorrt": [ENGINE, TIMING_CACHE]}
STANDALONE = Path(__file__).with_name("standalone.py")
BATCHING = Path(batching.__file__)


@dataclass
class Judged:
    """What judged an artifact at build time: the backend that ran it here (the artifact's own, or its
    `check_with` for runtimes that run on the device only), on which file, its first outputs, and the
    per-sample summaries of all its outputs on the evaluation data (edgeml.bundle.monitoring)."""
    backend: str
    version: str | None
    entry: str
    outputs: list[np.ndarray]
    summaries: list[Summaries]


def write_bundle(folder: Path, artifact: Artifact, row: Row, run: Run,
                 inputs: list[TensorSpec], outputs: list[TensorSpec], preprocessing: dict | None,
                 reference_inputs: dict[str, np.ndarray], judged: Judged, monitoring: dict | None) -> dict:
    """Move `artifact` into `folder`, add reference.npz and run.py, write the manifest; return the manifest.

    `reference_inputs` are the first evaluation samples and `judged.outputs` the outputs they gave;
    `monitoring` is the block edgeml.bundle.monitoring made (None: left out, as for random data).
    """
    os.rename(artifact.folder, folder)
    artifact.folder = folder
    tolerance = reference.tolerance(artifact.precision, artifact.runtime_config)
    reference.write_reference(folder / reference.REFERENCE, reference_inputs,
                              {spec.name: out for spec, out in zip(outputs, judged.outputs)}, tolerance)
    (folder / RUNNER).write_text(run_py(), encoding="utf-8")
    (folder / RUNNER).chmod(0o755)
    files = [{"path": p.relative_to(folder).as_posix(), "sha256": sha256_file(p), "size": p.stat().st_size}
             for p in artifact.files]
    manifest = {
        "format": "edgeml-bundle",
        "format_version": FORMAT_VERSION,
        "edgeml_version": run.edgeml_version,
        "target": run.target,
        "candidate": row.name,
        "backend": {"name": artifact.backend, "version": row.backend_version,
                    "requires": _requires(artifact, row)},
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
            "predicted": row.predicted,
        },
        "int8_scheme": run.int8_scheme if "int8" in artifact.precision else None,
        "profile": None if run.profile is None else {k: run.profile[k] for k in ("name", "display_name", "runtimes")},
        "status": row.status,
        "next_step": row.reason if row.status in ("predicted", "needs device") else None,
        "lineage": {
            "source": {k: run.source[k] for k in ("kind", "name", "sha256")},
            "exporter": (run.export or {}).get("exporter"),
            "calibration_data_sha256": run.data["calibration"]["sha256"],
            "evaluation_data_sha256": run.data["evaluation"]["sha256"],
            "training_data_sha256": (run.data.get("training") or {}).get("sha256"),
            "recipe": run.config["recipe"],
            "seeds": _seeds(run),
        },
        "reference": {
            "file": reference.REFERENCE,
            "samples": len(judged.outputs[0]),
            "inputs": "the first samples of the evaluation data, as the model takes them",
            "outputs_from": {"backend": judged.backend, "version": judged.version, "entry": judged.entry},
            "tolerance": tolerance,
            "comparison": reference.COMPARISON,
        },
        "run": {"script": RUNNER, "check": f"python {RUNNER} --check",
                "infer": f"python {RUNNER} INPUT.npz -o OUTPUT.npz"},
        "device_files": DEVICE_FILES.get(artifact.backend, []),
        "files": files,
    }
    if monitoring is not None:
        manifest["monitoring"] = monitoring
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def run_py() -> str:
    """A bundle's run.py: standalone.py with the code of edgeml/batching.py, from its NoBatchAxis on, in place of
    the line that imports it, so that it runs without edgeml."""
    standalone, code = STANDALONE.read_text(encoding="utf-8"), BATCHING.read_text(encoding="utf-8")
    start = standalone.index("from edgeml.batching import ")
    end = standalone.index("\n", start) + 1
    return standalone[:start] + code[code.index("class NoBatchAxis("):] + standalone[end:]


def _requires(artifact: Artifact, row: Row) -> dict[str, str | None]:
    """Import name -> version of what run.py needs: the runtime the artifact was built and checked with
    (TensorRT: the version the device profile names, as an engine runs only with its own), and numpy."""
    module = BACKENDS[artifact.backend].modules[0]
    version = artifact.runtime_config.get("tensorrt") if artifact.backend == "tensorrt" else row.backend_version
    return {module: None if version is None else str(version), "numpy": package_version("numpy")}


def _seeds(run: Run) -> dict[str, int]:
    seeds = {"recipe": run.config["recipe"]["seed"]}
    if run.config.get("example") == "digits":
        from edgeml.examples import SEED

        seeds["example"] = SEED
    return seeds
