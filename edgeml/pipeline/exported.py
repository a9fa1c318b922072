"""The ONNX model every candidate is built from: the given file, or the export of a PyTorch model (cached),
checked against PyTorch; and what the rest of the run reads from it (specs, batch, the latency sample)."""

from __future__ import annotations

import inspect
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgeml import cache as caching
from edgeml.batching import model_batch, to_model
from edgeml.hashing import sha256_arrays, sha256_file
from edgeml.inputs import data as data_mod
from edgeml.inputs.data import Dataset
from edgeml.inputs.models import SourceModel, external_data, onnx_input_specs, onnx_output_specs
from edgeml.inputs.specs import TensorSpec, with_batch_axes
from edgeml.measure.evaluate import predict
from edgeml.progress import Reporter
from edgeml.report.record import Run
from edgeml.runtimes.base import package_version
from edgeml.runtimes.onnxruntime import OrtRunner

PARITY_SAMPLES = 64           # evaluation samples the export parity check uses
EVAL_BATCH = 32               # evaluation batch for models with a symbolic batch dimension, at most ...
EVAL_BATCH_ELEMENTS = 2 ** 19  # ... this many input elements: large batches of large inputs run slower per
                               # sample on the CPU (EfficientNet-Lite0 in PyTorch: 23 ms at batch 1-4, 55 at 32)


@dataclass(frozen=True)
class Exported:
    """The ONNX model the candidates are built from, and what the run reads from it."""
    path: Path
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    batch: int                   # the evaluation batch
    fixed: bool                  # whether the model fixes its batch size (the last batch is then padded)

    def sample(self, evaluation: Dataset) -> dict[str, np.ndarray]:
        """One real evaluation sample (or one fixed-size batch of them) for latency runs, as the model takes it."""
        size = self.batch if self.fixed else 1
        return to_model({k: np.ascontiguousarray(np.resize(v[:size], (size,) + v.shape[1:]))
                         for k, v in evaluation.inputs.items()}, evaluation.axes)


def onnx_model(source: SourceModel, source_key: dict | None, evaluation: Dataset, work: Path, run: Run,
               reporter: Reporter, store: caching.Cache) -> Exported:
    """The given ONNX model, or the export of `source` into `work` (restored from the cache when the same model,
    example inputs and exporter versions made it before)."""
    path = source.path if not source.is_torch else _export(source, source_key, evaluation, work, run, reporter,
                                                            store)
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    axes = {s.name: s.batch_axis for s in source.inputs}      # found in the graph, or given with --input-shape
    inputs = [replace(s, batch_axis=axes.get(s.name, s.batch_axis)) for s in with_batch_axes(onnx_input_specs(proto))]
    return Exported(path, inputs, onnx_output_specs(proto), *eval_batch(inputs))


def _export(source: SourceModel, source_key: dict | None, evaluation: Dataset, work: Path, run: Run,
            reporter: Reporter, store: caching.Cache) -> Path:
    from edgeml.inputs.export import export_onnx

    folder = work / "export"                    # with the external data files the exporter may write
    path = folder / "exported.onnx"
    example = to_model({k: data_mod.at_least_two(v[:2]) for k, v in evaluation.inputs.items()}, evaluation.axes)
    name = caching.entry_name("export", source=source_key, example=sha256_arrays(example),
                              packages={p: package_version(p) for p in ("torch", "onnx", "onnxscript")})

    def make() -> dict:
        folder.mkdir()
        result = export_onnx(source, path, example)
        return {"exporter": result.exporter, "output_names": result.output_names, "notes": result.notes}
    with reporter.step("Export to ONNX") as step:
        exported, step.cached = store.fetch(name, folder, make)
    for note in exported["notes"]:
        reporter.warn(note)
    run.export = {**exported, "cached": step.cached}
    return path


def source_key(source: SourceModel) -> dict | None:
    """What identifies a PyTorch model in cache keys: its hash and inputs and, for Python code (a module's
    class, a factory), the hash of the files that define it; None when one is not in a file."""
    key = {"kind": source.kind, "sha256": source.sha256, "inputs": [s.to_dict() for s in source.inputs]}
    if source.kind in ("factory", "module"):
        names = {type(source.module).__module__}
        if source.kind == "factory":
            names.add(source.reload["model"].split(":")[0])
        try:
            key["code"] = {name: sha256_file(Path(inspect.getsourcefile(sys.modules[name]))) for name in sorted(names)}
        except (KeyError, TypeError, OSError):
            return None
    return key


def onnx_digest(path: Path) -> dict[str, str]:
    """sha256 of an ONNX model file and of each external data file it names."""
    import onnx

    external = {location for _, location in external_data(onnx.load(str(path), load_external_data=False))}
    return {name: sha256_file(path.parent / name) for name in sorted(external | {path.name})}


def parity(reference: list[np.ndarray], exported: Exported, evaluation: Dataset, threads: int,
           names: list[str]) -> dict:
    """The exported model's outputs against PyTorch's (`reference`) on the first PARITY_SAMPLES samples."""
    from edgeml.inputs.export import check_parity

    n = min(len(evaluation), PARITY_SAMPLES)
    subset = evaluation.subset(np.arange(n), evaluation.source)
    outputs = predict(OrtRunner(exported.path, threads), subset, exported.batch, exported.fixed)
    return check_parity(names, outputs, [r[:n] for r in reference]).to_dict()


def eval_batch(inputs: list[TensorSpec]) -> tuple[int, bool]:
    """(batch, whether the model fixes it): the model's own batch (edgeml.batching.model_batch), else
    EVAL_BATCH bounded by the sample size."""
    fixed = model_batch([s.shape for s in inputs], [s.batch_axis for s in inputs])
    if fixed is not None:
        return fixed, True
    per_sample = max(math.prod(d if isinstance(d, int) else 1 for i, d in enumerate(s.shape) if i != s.batch_axis)
                     for s in inputs)
    return max(1, min(EVAL_BATCH, EVAL_BATCH_ELEMENTS // per_sample)), False
