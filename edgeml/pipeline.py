"""`optimize`: from a trained model to a measured, selected and bundled artifact.

    load model -> load data -> export to ONNX + parity check (PyTorch models)
      -> reference row (the original) -> for each candidate of the target: build, validate,
      profile -> select -> bundle + report, all written atomically into OUT.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

import edgeml
from edgeml import data as data_mod
from edgeml.bundle import write_bundle
from edgeml.compress.quantize import Int8Config
from edgeml.data import Dataset
from edgeml.errors import EdgemlError, first_line
from edgeml.evaluate import compare, predict, quality_metric
from edgeml.models import SourceModel, load_model, onnx_input_specs, onnx_output_specs
from edgeml.outdir import AtomicOutput
from edgeml.profiling import MeasureConfig, machine_info, measure_latency
from edgeml.progress import Reporter
from edgeml.record import Row, Run
from edgeml.report import render_markdown
from edgeml.selection import select
from edgeml.specs import TensorSpec
from edgeml.targets import get_target
from edgeml.targets.base import Artifact, BuildContext, Runner, package_version
from edgeml.targets.onnxruntime_backend import OrtRunner

EXAMPLES = ("digits",)
DEFAULT_SPLIT = 0.3           # calibration share when one dataset is split
RANDOM_SAMPLES = 64           # samples drawn when no data is given
PARITY_SAMPLES = 64           # evaluation samples the export parity check uses
EVAL_BATCH = 32               # evaluation batch for models with a symbolic batch dimension
PACKAGES = ("torch", "onnx", "onnxruntime", "openvino", "nncf", "numpy")


def optimize(model: Any = None, *, target: str = "cpu", example: str | None = None,
             weights: str | Path | None = None, input_shapes: list[str] | tuple[str, ...] = (),
             data: str | Path | None = None, split: float | None = None,
             calib_data: str | Path | None = None, eval_data: str | Path | None = None,
             preprocess: str | None = None, max_accuracy_drop: float = 0.01,
             threads: int | None = None, out: str | Path | None = None, force: bool = False,
             seed: int = 0, measure: MeasureConfig = MeasureConfig(),
             reporter: Reporter | None = None, debug: bool = False) -> Run:
    """Optimize `model` for `target`; write OUT/bundle/, OUT/report.json and OUT/report.md.

    `model` is a path (ONNX, .pt2, TorchScript), a `package.module:factory` string (with
    `weights`), or a torch.nn.Module; or pass `example="digits"` for the built-in example.
    Returns the run record.
    """
    _check_arguments(model, example, data, split, calib_data, eval_data, max_accuracy_drop, threads)
    tgt = get_target(target)
    threads = threads or os.cpu_count() or 1
    reporter = reporter or Reporter()
    config = {
        "model": _describe_arg(model), "example": example, "weights": _str(weights),
        "input_shapes": list(input_shapes), "target": target, "data": _str(data), "split": split,
        "calib_data": _str(calib_data), "eval_data": _str(eval_data), "preprocess": preprocess,
        "max_accuracy_drop": max_accuracy_drop, "threads": threads, "seed": seed,
        "measure": asdict(measure),
    }
    out = Path(out) if out else Path("edgeml-out") / f"{example or _default_name(model)}-{target}"

    with reporter, AtomicOutput(out, force) as staging:
        with reporter.step("Load model" if example is None else "Prepare the digits example"):
            source, calibration, evaluation = _load(model, example, weights, input_shapes, data, split,
                                                    calib_data, eval_data, preprocess, seed, reporter)
        run = Run(edgeml_version=edgeml.__version__,
                  created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  target=target, config=config, machine=machine_info(threads),
                  packages={p: package_version(p) for p in PACKAGES}, source=source.describe(),
                  data={"calibration": calibration.describe(), "evaluation": evaluation.describe()})
        work = staging / "work"
        work.mkdir()
        onnx_path = _onnx_model(source, evaluation, work, run, reporter)
        onnx_inputs, onnx_outputs = _onnx_specs(onnx_path)
        batch, fixed = _eval_batch(onnx_inputs)
        sample = _profile_sample(evaluation, batch, fixed)

        backend = _reference_backend(source)
        with reporter.step(f"Reference: the original model ({backend})") as step:
            step.describe("Reference: evaluating")
            reference_runner = _reference_runner(source, onnx_path, threads)
            reference = predict(reference_runner, evaluation, batch, fixed)
            metric = quality_metric(reference, evaluation.labels)
            if run.export is not None:
                run.export["parity"] = _parity(reference, onnx_path, evaluation, batch, fixed, threads,
                                               run.export["output_names"])
            ref_row = Row("original", backend, "fp32", "reference", backend_version=package_version(backend),
                          method=f"the {source.kind.replace('_', ' ')} as given"
                                 + (", PyTorch eager" if source.is_torch else ", ONNX Runtime"))
            ref_row.metrics = compare(reference, reference, evaluation.labels)
            ref_row.quality_drop = 0.0
            ref_row.size_bytes = _source_size(source)
            step.describe("Reference: profiling")
            _profile(ref_row, reference_runner, sample, measure,
                     _reference_memory_spec(source, threads))
            run.rows.append(ref_row)
        run.data.update(quality_metric=metric, notes=_data_notes(calibration, evaluation, metric))

        context = BuildContext(calibration=calibration)
        artifacts: dict[str, Artifact] = {}
        for candidate in tgt.candidates:
            missing = candidate.missing()
            row = Row(candidate.name, candidate.backend.name, candidate.precision, "candidate",
                      method=candidate.method, backend_version=None if missing else candidate.backend.version())
            run.rows.append(row)
            if missing:
                row.status = "unavailable"
                row.reason = f"{', '.join(missing)} not installed (pip install '{candidate.backend.extra}')"
                reporter.warn(f"{candidate.name}: {row.reason}")
                continue
            with reporter.step(f"Candidate {candidate.name}") as step:
                try:
                    step.describe(f"{candidate.name}: building")
                    started = time.perf_counter()
                    artifact = candidate.build(onnx_path, work / candidate.name, context)
                    row.build_seconds = round(time.perf_counter() - started, 3)
                    row.size_bytes = artifact.size_bytes
                    step.describe(f"{candidate.name}: evaluating")
                    runner = candidate.backend.open(artifact, threads)
                    outputs = predict(runner, evaluation, batch, fixed)
                    row.metrics = compare(outputs, reference, evaluation.labels)
                    row.quality_drop = ref_row.metrics[metric] - row.metrics[metric]
                    step.describe(f"{candidate.name}: profiling")
                    _profile(row, runner, sample, measure,
                             _artifact_memory_spec(artifact, threads))
                    artifacts[candidate.name] = artifact
                except EdgemlError:
                    raise
                except Exception as e:
                    if debug:
                        raise
                    row.status, row.reason = "failed", f"{type(e).__name__}: {first_line(e)}"
                    step.fail(row.reason)

        with reporter.step("Select and bundle"):
            run.selection = select(run.rows, max_accuracy_drop, metric)
            chosen = run.selected
            if chosen is None:
                raise EdgemlError(
                    f"no candidate could be built for target '{target}': "
                    + "; ".join(f"{r.name}: {r.reason}" for r in run.rows if r.role == "candidate"))
            if not run.selection["within_budget"]:
                reporter.warn(run.selection["reason"])
            run.bundle = write_bundle(staging / "bundle", artifacts[chosen.name], chosen, run, onnx_inputs,
                                      onnx_outputs, calibration.preprocessing or evaluation.preprocessing)
            shutil.rmtree(work)
        run.steps = list(reporter.steps)
        run.warnings = list(reporter.warnings)
        run.output = str(out)
        record = run.to_dict()
        (staging / "report.json").write_text(json.dumps(record, indent=2) + "\n")
        (staging / "report.md").write_text(render_markdown(record))
    return run


def _check_arguments(model, example, data, split, calib_data, eval_data, max_drop, threads) -> None:
    if (model is None) == (example is None):
        raise EdgemlError("give a MODEL or --example digits (one of them)")
    if example is not None and example not in EXAMPLES:
        raise EdgemlError(f"unknown example '{example}'; available: {', '.join(EXAMPLES)}")
    if example is not None and any(x is not None for x in (data, calib_data, eval_data)):
        raise EdgemlError("--example brings its own data; do not combine it with --data/--calib-data/--eval-data")
    if data is not None and (calib_data is not None or eval_data is not None):
        raise EdgemlError("use either --data (split into calibration and evaluation) or --calib-data/--eval-data")
    if split is not None and data is None:
        raise EdgemlError("--split divides the dataset given with --data; give --data too")
    if not 0 <= max_drop < 1:
        raise EdgemlError(f"--max-accuracy-drop is a fraction between 0 and 1 (0.01 = 1 point), got {max_drop}")
    if threads is not None and threads < 1:
        raise EdgemlError(f"--threads must be at least 1, got {threads}")


def _load(model, example, weights, input_shapes, data, split, calib_data, eval_data, preprocess, seed,
          reporter: Reporter) -> tuple[SourceModel, Dataset, Dataset]:
    if example is not None:
        from edgeml.examples import digits_example

        ex = digits_example()
        source = load_model("edgeml.examples:DigitsCNN", ex.weights, ["input:?x1x8x8"])
        source.name = "digits"
        source.notes.append("built-in digits example: CNN " + ("reused from the cache" if ex.cached else
                            "trained now") + f" ({ex.weights}); calibration = validation split, "
                            "evaluation = test split")
        return source, ex.validation, ex.test

    source = load_model(model, weights, input_shapes)
    if source.kind == "factory" and source.path is None:
        reporter.warn(f"no --weights given: using the weights {model}() creates")

    def load(path):
        return data_mod.load_data(path, source.inputs, preprocess)
    if data is not None:
        calibration, evaluation = data_mod.split(load(data), split if split is not None else DEFAULT_SPLIT, seed)
    else:
        calibration = load(calib_data) if calib_data is not None else None
        evaluation = load(eval_data) if eval_data is not None else None
    if calibration is None:
        calibration = data_mod.random_dataset(source.inputs, RANDOM_SAMPLES, seed, "calibration")
        reporter.warn("no calibration data: INT8 candidates are calibrated on random inputs, "
                      "so their accuracy is likely poor; give --calib-data or --data")
    if evaluation is None:
        evaluation = data_mod.random_dataset(source.inputs, RANDOM_SAMPLES, seed + 1, "evaluation")
        reporter.warn("no evaluation data: candidates are compared with the original on random "
                      "inputs (fidelity only, no accuracy); give --eval-data or --data")
    overlap = data_mod.check_disjoint(calibration, evaluation)
    if overlap:
        reporter.warn(overlap)
    return source, calibration, evaluation


def _onnx_model(source: SourceModel, evaluation: Dataset, work: Path, run: Run, reporter: Reporter) -> Path:
    """The ONNX model the candidates are built from: the given file, or the export."""
    if not source.is_torch:
        return source.path
    from edgeml.export import export_onnx

    path = work / "exported.onnx"
    with reporter.step("Export to ONNX"):
        example = {k: _at_least_two(v) for k, v in evaluation.feeds(0, 2).items()}
        result = export_onnx(source, path, example)
    for note in result.notes:
        reporter.warn(note)
    run.export = {"exporter": result.exporter, "output_names": result.output_names, "notes": result.notes}
    return path


def _onnx_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return onnx_input_specs(proto), onnx_output_specs(proto)


def _parity(reference: list[np.ndarray], onnx_path: Path, evaluation: Dataset, batch: int, fixed: bool,
            threads: int, names: list[str]) -> dict:
    from edgeml.export import check_parity

    n = min(len(evaluation), PARITY_SAMPLES)
    subset = evaluation.subset(np.arange(n), evaluation.source)
    exported = predict(OrtRunner(onnx_path, threads), subset, batch, fixed)
    return check_parity(names, exported, [r[:n] for r in reference]).to_dict()


def _at_least_two(a: np.ndarray) -> np.ndarray:
    return a if len(a) >= 2 else np.concatenate([a, a])


def _eval_batch(inputs: list[TensorSpec]) -> tuple[int, bool]:
    first = inputs[0].shape[0] if inputs and inputs[0].shape else None
    return (first, True) if isinstance(first, int) else (EVAL_BATCH, False)


def _profile_sample(evaluation: Dataset, batch: int, fixed: bool) -> dict[str, np.ndarray]:
    """One real evaluation sample (or one fixed-size batch of them) for latency runs."""
    size = batch if fixed else 1
    return {k: np.ascontiguousarray(np.resize(v[:size], (size,) + v.shape[1:]))
            for k, v in evaluation.inputs.items()}


def _reference_backend(source: SourceModel) -> str:
    return "torch" if source.is_torch else "onnxruntime"


def _reference_runner(source: SourceModel, onnx_path: Path, threads: int) -> Runner:
    if source.is_torch:
        from edgeml.targets.pytorch_backend import open_source

        return open_source(source, threads)
    return OrtRunner(onnx_path, threads)


def _artifact_memory_spec(artifact: Artifact, threads: int) -> dict:
    return {"threads": threads, "artifact": {
        "backend": artifact.backend, "precision": artifact.precision, "folder": str(artifact.folder.resolve()),
        "entry": artifact.entry, "runtime_config": artifact.runtime_config}}


def _reference_memory_spec(source: SourceModel, threads: int) -> dict | None:
    if not source.is_torch:
        return _artifact_memory_spec(Artifact("onnxruntime", "fp32", source.path.parent, source.path.name), threads)
    return None if source.reload is None else {"threads": threads, "source": source.reload}


def _profile(row: Row, runner: Runner, sample: dict, measure: MeasureConfig, memory_spec: dict | None) -> None:
    gc.collect()  # so that collecting earlier rows' garbage does not land in the timed runs
    row.latency = measure_latency(lambda: runner.run(sample), measure).to_dict()
    if memory_spec is not None:
        from edgeml import memprobe  # not at import time: the probe runs it as __main__

        row.peak_memory_bytes = memprobe.measure(memory_spec, sample)


def _data_notes(calibration: Dataset, evaluation: Dataset, metric: str) -> list[str]:
    used = min(len(calibration), Int8Config.max_calibration_samples)
    notes = [f"calibration: {calibration.source}, {len(calibration)} samples"
             + (f" (INT8 passes calibrate on the first {used})" if used < len(calibration) else ""),
             f"evaluation: {evaluation.source}, {len(evaluation)} samples"]
    if calibration.synthetic:
        notes.append("calibration used RANDOM inputs: INT8 ranges do not reflect real data")
    if evaluation.synthetic:
        notes.append("evaluation used RANDOM inputs: the numbers are fidelity to the original "
                     "model on random data, not accuracy")
    explain = {"accuracy": "top-1 accuracy against the labels",
               "agreement": "top-1 agreement with the original model (no labels given)",
               "cosine": "mean cosine similarity to the original model's outputs"}
    notes.append(f"quality metric: {explain[metric]}; drop = original - candidate")
    return notes


def _source_size(source: SourceModel) -> int:
    if source.path is not None:
        return source.path.stat().st_size
    return sum(p.numel() * p.element_size() for p in source.module.state_dict().values())


def _default_name(model: Any) -> str:
    if isinstance(model, (str, Path)):
        text = str(model)
        return Path(text).stem if Path(text).exists() else text.split(":")[-1]
    return type(model).__name__


def _describe_arg(model: Any) -> str | None:
    return None if model is None else str(model) if isinstance(model, (str, Path)) else type(model).__name__


def _str(value) -> str | None:
    return None if value is None else str(value)
