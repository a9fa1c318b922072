"""`optimize`: from a trained model to a measured, selected and bundled artifact.

    load model -> load data -> export to ONNX + parity check (PyTorch models)
      -> reference row (the original) -> for each candidate of the target: build, validate,
      profile -> select -> bundle + report, all written atomically into OUT.

The export and every build go through the cache (edgeml.pipeline.cache), keyed by what determines them,
so a rerun restores them; validation and profiling always run anew.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, fields, replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

import edgeml
from edgeml.bundle.reference import SAMPLES as REFERENCE_SAMPLES
from edgeml.bundle.write import Judged, write_bundle
from edgeml.compress.quantize import Int8Config
from edgeml.errors import FULL_DISK, EdgemlError, TargetError, first_line
from edgeml.hashing import sha256_arrays, sha256_file
from edgeml.inputs import data as data_mod
from edgeml.inputs.data import Dataset
from edgeml.inputs.models import (
    SourceModel,
    external_data,
    load_model,
    onnx_input_specs,
    onnx_output_specs,
    safe_loading,
)
from edgeml.inputs.recipe import Recipe, dump_recipe, load_recipe, make_recipe
from edgeml.inputs.specs import TensorSpec
from edgeml.measure import cpu_features
from edgeml.measure.evaluate import compare, predict, quality_metric
from edgeml.measure.latency import MeasureConfig, machine_info, measure_latency
from edgeml.measure.paired_timing import interleave, summarize
from edgeml.measure.uncertainty import drop_uncertainty, resolution
from edgeml.outdir import AtomicOutput
from edgeml.pipeline import cache as caching
from edgeml.pipeline import plan
from edgeml.pipeline.selection import contenders, fastest_measured, select
from edgeml.pipeline.tuning import Tuned, tune
from edgeml.progress import Reporter
from edgeml.report.markdown import render_markdown
from edgeml.report.record import Row, Run
from edgeml.runtimes import BACKENDS
from edgeml.runtimes.base import Artifact, Runner, package_version
from edgeml.runtimes.onnxruntime import OrtRunner
from edgeml.targets import get_target
from edgeml.targets.base import BuildContext, Candidate, Target

EXAMPLES = ("digits",)
DEFAULT_SPLIT = 0.3           # calibration share when one dataset is split
RANDOM_SAMPLES = 64           # samples drawn when no data is given
PARITY_SAMPLES = 64           # evaluation samples the export parity check uses
EVAL_BATCH = 32               # evaluation batch for models with a symbolic batch dimension, at most ...
EVAL_BATCH_ELEMENTS = 2 ** 19  # ... this many input elements: large batches of large inputs run slower per
                               # sample on the CPU (EfficientNet-Lite0 in PyTorch: 23 ms at batch 1-4, 55 at 32)
PACKAGES = ("torch", "onnx", "onnxruntime", "openvino", "nncf", "numpy")
LAYER_PROFILE_SECONDS = 0.2   # about how long the per-layer profile of the selected artifact runs
LAYER_PROFILE_RUNS = (3, 50)  # and its fewest and most profiled runs (after 3 warm-up runs)
PAIRED_ROUNDS = 5             # close contenders are timed again in this many alternating rounds ...
PAIRED_SECONDS = 2.0          # ... taking this many times --measure-seconds, all of them together


def optimize(model: Any = None, *, recipe: Recipe | str | Path | None = None, example: str | None = None,
             weights: str | Path | None = None, input_shapes: list[str] | tuple[str, ...] = (),
             data: str | Path | None = None, split: float | None = None,
             calib_data: str | Path | None = None, eval_data: str | Path | None = None,
             train_data: str | Path | None = None, preprocess: str | None = None,
             out: str | Path | None = None, force: bool = False, reporter: Reporter | None = None,
             debug: bool = False, track: str | None = None, cache: bool = True,
             cache_dir: str | Path | None = None, cache_max_bytes: int | None = None, safe: bool = False,
             **settings: Any) -> Run:
    """Optimize `model` for a target; write OUT/bundle/, OUT/report.json and OUT/report.md.

    `model` is a path (ONNX, .pt2, TorchScript), a `package.module:factory` string (with
    `weights`), or a torch.nn.Module; or pass `example="digits"` for the built-in example.
    `recipe` (a Recipe or a YAML file) holds the settings; keyword `settings` (the Recipe's
    fields: target, precision, prune, max_accuracy_drop, threads, ...) override it.
    `track="mlflow"` logs the finished run to MLflow (see edgeml.report.tracking). With `cache` on, the exported
    ONNX model and the candidates' builds are kept in `cache_dir` (default: edgeml.pipeline.cache.cache_dir(); at most
    `cache_max_bytes`, default $EDGEML_CACHE_MAX_BYTES or 5 GiB) and restored by a rerun. `safe=True` refuses
    TorchScript and ExportedProgram files (programs that can run code when loaded). Returns the run record.
    """
    recipe = _recipe(recipe, settings)
    _check_arguments(model, example, data, split, calib_data, eval_data, train_data)
    tgt = get_target(recipe.target)
    profile = plan.resolve_profile(tgt, recipe.profile)
    threads = recipe.threads or os.cpu_count() or 1
    measure = MeasureConfig(seconds=recipe.measure_seconds)
    reporter = reporter or Reporter()
    store = caching.Cache((cache_dir or caching.cache_dir()) if cache else None,
                          caching.max_bytes() if cache_max_bytes is None else cache_max_bytes)
    config = {
        "model": _describe_arg(model), "example": example, "weights": _str(weights),
        "input_shapes": list(input_shapes), "data": _str(data), "split": split, "calib_data": _str(calib_data),
        "eval_data": _str(eval_data), "train_data": _str(train_data), "preprocess": preprocess,
        "recipe": recipe.to_dict(), "threads": threads, "measure": asdict(measure),
        "cache": None if store.folder is None else str(store.folder),
    }
    out = Path(out) if out else Path("edgeml-out") / f"{example or _default_name(model)}-{recipe.target}"

    with reporter, AtomicOutput(out, force) as staging:
        with reporter.step("Load model" if example is None else "Prepare the digits example"):
            source, calibration, evaluation, train = _load(model, example, weights, input_shapes, data, split,
                                                           calib_data, eval_data, train_data, preprocess,
                                                           recipe.seed, reporter, safe)
        candidates = _candidates(tgt, recipe)
        if not source.is_torch and all(c.needs_source for c in candidates):
            raise TargetError(f"target '{tgt.name}' converts PyTorch models and MODEL is ONNX: give the PyTorch "
                              "model (package.module:factory with --weights, or a .pt2 file)")
        run = Run(edgeml_version=edgeml.__version__,
                  created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  target=recipe.target, config=config, machine=machine_info(threads),
                  packages={p: package_version(p) for p in PACKAGES}, source=source.describe(),
                  profile=None if profile is None else profile.to_dict(),
                  data={"calibration": calibration.describe(), "evaluation": evaluation.describe(),
                        "training": None if train is None else train.describe()})
        work = staging / "work"
        work.mkdir()
        stages = _compress(source, recipe, calibration, train, run, reporter)
        model_used = stages[-1][1] if stages else source
        source_key = _source_key(model_used) if model_used.is_torch else None
        if model_used.is_torch and source_key is None and store.folder is not None:
            reporter.warn("the model's code is not in a file, so it cannot be hashed: nothing of this run is "
                          "cached")
            store, run.config["cache"] = caching.Cache(None), None
        onnx_path = _onnx_model(model_used, source_key, evaluation, work, run, reporter, store)
        plan.check_fits(profile, onnx_path)
        onnx_inputs, onnx_outputs = _onnx_specs(onnx_path)
        batch, fixed = _eval_batch(onnx_inputs)
        sample = _profile_sample(evaluation, batch, fixed)

        backend = _reference_backend(source)
        with reporter.step(f"Reference: the original model ({backend})") as step:
            step.describe("Reference: evaluating")
            reference_runner = _reference_runner(source, onnx_path, threads)
            reference = predict(reference_runner, evaluation, batch, fixed)
            metric = quality_metric(reference, evaluation.labels, recipe.metric, evaluation.source)
            ref_row = Row("original", backend, "fp32", "reference", backend_version=package_version(backend),
                          method=f"the {source.kind.replace('_', ' ')} as given"
                                 + (", PyTorch eager" if source.is_torch else ", ONNX Runtime"))
            ref_row.metrics = compare(reference, reference, evaluation.labels)
            _judge(ref_row, reference, reference, evaluation.labels, metric, ref_row.metrics[metric])
            ref_row.size_bytes = _source_size(source)
            step.describe("Reference: profiling")
            _profile(ref_row, reference_runner, sample, measure, _reference_memory_spec(source, threads))
            ref_row.predicted = plan.predict(onnx_path, profile, "fp32", recipe.threads)
            run.rows.append(ref_row)
        artifacts: dict[str, Artifact] = {}
        judged: dict[str, Judged] = {}
        original_eligible = not source.is_torch          # an ONNX input can ship as it is
        if original_eligible:                            # where it is: opened to time it, copied only if chosen
            artifacts[ref_row.name] = Artifact("onnxruntime", "fp32", source.path.parent, source.path.name)
            judged[ref_row.name] = Judged("onnxruntime", ref_row.backend_version, source.path.name,
                                          [o[:REFERENCE_SAMPLES] for o in reference])
        coarse = resolution(len(evaluation), metric, recipe.max_accuracy_drop)
        if coarse:
            reporter.warn(coarse)
        run.data.update(quality_metric=metric,
                        notes=_data_notes(calibration, evaluation, train, metric, recipe, stages))

        exported_outputs, exported_drop = reference, 0.0
        for name, stage, method in stages:
            with reporter.step(f"Stage {name} (PyTorch)") as step:
                runner = _reference_runner(stage, onnx_path, threads)
                outputs = predict(runner, evaluation, batch, fixed)
                row = Row(name, "torch", "fp32", "stage", method=method, backend_version=package_version("torch"))
                _judge(row, outputs, reference, evaluation.labels, metric, ref_row.metrics[metric])
                row.size_bytes = _source_size(stage)
                step.describe(f"{name}: profiling")
                _profile(row, runner, sample, measure, None)
                run.rows.append(row)
                exported_outputs, exported_drop = outputs, row.quality_drop
        if exported_drop > recipe.max_accuracy_drop:
            reporter.warn(f"the compressed model already loses {exported_drop:.4f} {metric} in FP32, more than the "
                          f"budget {recipe.max_accuracy_drop:g}: prune less, or distill longer or with more data "
                          "(no INT8 accuracy search can win that back)")
        if run.export is not None:
            run.export["parity"] = _parity(exported_outputs, onnx_path, evaluation, batch, fixed, threads,
                                           run.export["output_names"])

        scheme = cpu_features.int8_scheme()
        run.int8_scheme = scheme.to_dict()
        context = BuildContext(calibration=calibration,
                               int8=Int8Config(calibration_method=recipe.calibration_method,
                                               avoid_saturation=scheme.avoid_saturation),
                               source=model_used if model_used.is_torch else None,
                               max_accuracy_drop=recipe.max_accuracy_drop, profile=profile)
        build = partial(_build, onnx_path=onnx_path, store=store,
                        identity={"onnx": _onnx_digest(onnx_path), "source": source_key, "seed": recipe.seed})
        repairs: list[tuple[Candidate, Row]] = []       # INT8 candidates that broke the budget
        for candidate in candidates:
            missing = candidate.missing()
            row = Row(candidate.name, candidate.backend.name, candidate.precision, "candidate",
                      method=candidate.method, backend_version=None if missing else candidate.backend.version())
            run.rows.append(row)
            if missing:
                row.status = "unavailable"
                row.reason = f"{', '.join(missing)} not installed (pip install '{candidate.backend.extra}')"
                reporter.warn(f"{candidate.name}: {row.reason}")
                continue
            if candidate.as_given and original_eligible:
                row.status, row.reason = "skipped", ("the ONNX model as it is: the original row is this model, and "
                                                     "a candidate itself (shipped unchanged)")
                continue
            unsuited = (plan.unsuited(candidate, profile, context.source is not None)
                        or (candidate.applies(onnx_path) if candidate.applies else None))
            if unsuited:
                row.status, row.reason = "skipped", unsuited
                continue
            local = tgt.measures_here(candidate)
            if not local and candidate.check_with is None:
                row.status, row.reason = "skipped", tgt.elsewhere()
                continue
            with reporter.step(f"Candidate {candidate.name}") as step:
                try:
                    artifact, judged[candidate.name] = _build_and_measure(
                        row, candidate, local, build, work / candidate.name, context, evaluation, reference,
                        ref_row.metrics[metric], metric, batch, fixed, sample, threads, measure, step)
                    artifacts[candidate.name] = artifact
                    row.predicted = plan.predict(onnx_path, profile, candidate.computes_in or candidate.precision,
                                                 recipe.threads,
                                                 dla=candidate.needs_dla)
                    if not local:
                        _device_status(row, candidate, tgt)
                    if (candidate.layers is not None and local
                            and row.quality_drop > recipe.max_accuracy_drop
                            and exported_drop <= recipe.max_accuracy_drop):
                        repairs.append((candidate, row))
                except Exception as e:
                    if _fatal(e, debug):
                        raise
                    row.status, row.reason = "failed", f"{type(e).__name__}: {first_line(e)}"
                    step.fail(row.reason)

        # After every candidate is measured, so a search can stop once it cannot beat one within budget.
        reference_on_calibration = None
        for candidate, row in sorted(repairs, key=lambda pair: pair[1].latency["p50_ms"]):
            fastest = fastest_measured(run.rows, recipe.max_accuracy_drop, original_eligible=original_eligible)
            beat = None if fastest is None else (fastest.name, fastest.latency["p50_ms"])
            if beat is not None and beat[1] <= row.latency["p50_ms"]:
                run.tuning[candidate.name] = {
                    "reason": f"{beat[0]} is within the budget and already faster ({beat[1]:.3f} ms) than "
                              f"{candidate.name} with every layer in INT8 ({row.latency['p50_ms']:.3f} ms)"}
                continue
            with reporter.step(f"Accuracy budget: {candidate.name}") as step:
                try:
                    if reference_on_calibration is None:
                        step.describe("Accuracy budget: the original model on the calibration data")
                        reference_on_calibration = predict(reference_runner, calibration, batch, fixed)
                    tuned = tune(candidate, onnx_path, work / f"{candidate.name}-tuning", context,
                                 reference_on_calibration, batch, fixed, sample, threads, recipe.max_accuracy_drop,
                                 recipe.tuning_budget, step, metric, built=artifacts[candidate.name], beat=beat,
                                 build=build)
                    step.cached = bool(tuned.restored) and len(tuned.restored) == tuned.builds
                    if tuned.result.resolution:
                        reporter.warn(f"{candidate.name}: {tuned.result.resolution}")
                    # A mixed row that misses the budget matters only when no candidate is within it.
                    mixed = _mixed_row(candidate, tuned, run, row, needed=tuned.result.met or beat is None)
                    if mixed is not None:
                        step.describe(f"{mixed.name}: evaluating")
                        judged[mixed.name] = _measure_artifact(
                            mixed, candidate, True, tuned.artifact, evaluation, reference,
                            ref_row.metrics[metric], metric, batch, fixed, sample, threads, measure)
                        artifacts[mixed.name] = tuned.artifact
                        mixed.predicted = plan.predict(onnx_path, profile, mixed.precision, recipe.threads)
                except Exception as e:
                    if _fatal(e, debug):
                        raise
                    run.tuning[candidate.name] = {"reason": f"the search failed: {type(e).__name__}: {first_line(e)}"}
                    step.fail(run.tuning[candidate.name]["reason"])

        paired = _time_contenders(run.rows, artifacts, sample, threads, measure, recipe.max_accuracy_drop,
                                  original_eligible, reporter)
        with reporter.step("Select and bundle"):
            run.selection = select(run.rows, recipe.max_accuracy_drop, metric, profile,
                                   original_eligible=original_eligible, paired=paired)
            chosen = run.selected
            if chosen is None:
                raise EdgemlError(
                    f"no candidate could be built for target '{recipe.target}': "
                    + "; ".join(f"{r.name}: {r.reason}" for r in run.rows if r.role == "candidate"))
            if not run.selection["within_budget"]:
                reporter.warn(run.selection["reason"])
            if chosen is ref_row:
                artifacts[chosen.name] = _original_artifact(source.path, work / "original")
            run.bundle = write_bundle(staging / "bundle", artifacts[chosen.name], chosen, run, onnx_inputs,
                                      onnx_outputs, calibration.preprocessing or evaluation.preprocessing,
                                      evaluation.feeds(0, REFERENCE_SAMPLES), judged[chosen.name])
            run.layer_times = _layer_times(chosen, artifacts[chosen.name], sample, threads)
            shutil.rmtree(work)
        run.steps = list(reporter.steps)
        run.warnings = list(reporter.warnings)
        run.output = str(out)
        record = run.to_dict()
        (staging / "report.json").write_text(json.dumps(record, indent=2) + "\n")
        (staging / "report.md").write_text(render_markdown(record))
        (staging / "recipe.yaml").write_text(dump_recipe(recipe))
    if track is not None:
        from edgeml.report.tracking import track as track_run

        track_run(run, out, track, reporter)
    return run


def _recipe(recipe: Recipe | str | Path | None, settings: dict) -> Recipe:
    unknown = sorted(set(settings) - {f.name for f in fields(Recipe)})
    if unknown:
        raise TypeError(f"optimize() got unexpected keyword argument(s): {', '.join(unknown)}")
    if recipe is None:
        base = Recipe()
    elif isinstance(recipe, Recipe):
        base = recipe
    else:
        base = make_recipe(**load_recipe(recipe))
    return make_recipe(base, **settings)


def _candidates(target: Target, recipe: Recipe) -> list[Candidate]:
    """The target's candidates that the recipe's precision and quantizer allow."""
    chosen = [c for c in target.candidates
              if recipe.precision in ("auto", c.precision)
              and (recipe.quantizer == "auto" or c.quantizer in (None, recipe.quantizer))
              and (not c.opt_in or c.quantizer == recipe.quantizer)]
    if not chosen:
        offered = sorted({f"{c.precision}" for c in target.candidates})
        raise TargetError(f"target '{target.name}' has no candidate with precision {recipe.precision} and "
                          f"quantizer {recipe.quantizer}; it offers precisions {', '.join(offered)}")
    return chosen


def _original_artifact(model: Path, folder: Path) -> Artifact:
    """The ONNX model the user gave, as a candidate: its file and external data files copied byte for byte."""
    import onnx

    folder.mkdir()
    files = [location for _, location in external_data(onnx.load(str(model), load_external_data=False))]
    for name in dict.fromkeys([model.name, *files]):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model.parent / name, folder / name)
    return Artifact("onnxruntime", "fp32", folder, model.name)


def _time_contenders(rows: list[Row], artifacts: dict[str, Artifact], sample: dict, threads: int,
                     measure: MeasureConfig, max_drop: float, original_eligible: bool,
                     reporter: Reporter) -> dict | None:
    """The close contenders within the budget (selection.contenders) timed again, together, in alternating
    rounds: {row name: paired_timing.summarize(...)}; None when fewer than two are close."""
    close = contenders(rows, max_drop, original_eligible=original_eligible)
    if len(close) < 2:
        return None
    names = ", ".join(r.name for r in close)
    with reporter.step(f"Time the close contenders again, in alternating rounds ({names})") as step:
        runners = {r.name: BACKENDS[artifacts[r.name].backend].open(artifacts[r.name], threads) for r in close}
        config = replace(measure, seconds=measure.seconds * PAIRED_SECONDS / PAIRED_ROUNDS / len(close),
                         min_runs=20)
        rounds = interleave({name: partial(runner.run, sample) for name, runner in runners.items()},
                            PAIRED_ROUNDS, config,
                            on_round=lambda r, name, _: step.describe(f"Alternating rounds: {r + 1}/{PAIRED_ROUNDS}, "
                                                                      f"{name}"))
    return {name: summarize(timed) for name, timed in rounds.items()}


def _build(candidate: Candidate, folder: Path, context: BuildContext, *, onnx_path: Path, store: caching.Cache,
           identity: dict) -> tuple[Artifact, bool]:
    """`candidate`'s build of `onnx_path` into `folder`, or the same build restored from the cache; and
    whether it was restored. `identity` names the model and the seed; the key adds what the build is given
    (calibration data, INT8 settings including the layers kept in float, budget, device profile) and the
    versions of the packages that build it."""
    modules = candidate.backend.modules + candidate.needs + (candidate.check_with.modules if candidate.check_with
                                                             else ())
    name = caching.entry_name(
        f"build-{candidate.name}", **identity, calibration=context.calibration.sha256, int8=asdict(context.int8),
        max_accuracy_drop=context.max_accuracy_drop,
        profile=None if context.profile is None else context.profile.to_dict(),
        packages={m: package_version(m) for m in sorted(set(PACKAGES + modules))})

    def make() -> dict:
        artifact = candidate.build(onnx_path, folder, context)
        return {"backend": artifact.backend, "precision": artifact.precision, "entry": artifact.entry,
                "runtime_config": artifact.runtime_config}
    stored, restored = store.fetch(name, folder, make)
    return Artifact(folder=folder, **stored), restored


def _build_and_measure(row: Row, candidate: Candidate, local: bool,
                       build: Callable[[Candidate, Path, BuildContext], tuple[Artifact, bool]], folder: Path,
                       context: BuildContext,
                       evaluation: Dataset, reference: list[np.ndarray], reference_quality: float, metric: str,
                       batch: int, fixed: bool, sample: dict, threads: int, measure: MeasureConfig,
                       step) -> tuple[Artifact, Judged]:
    step.describe(f"{candidate.name}: building")
    started = time.perf_counter()
    artifact, row.cached = build(candidate, folder, context)
    step.cached = row.cached
    row.build_seconds = round(time.perf_counter() - started, 3)
    step.describe(f"{candidate.name}: evaluating")
    return artifact, _measure_artifact(row, candidate, local, artifact, evaluation, reference, reference_quality,
                                       metric, batch, fixed, sample, threads, measure)


def _measure_artifact(row: Row, candidate: Candidate, local: bool, artifact: Artifact, evaluation: Dataset,
                      reference: list[np.ndarray], reference_quality: float, metric: str, batch: int,
                      fixed: bool, sample: dict, threads: int, measure: MeasureConfig) -> Judged:
    """Judge `artifact` on the evaluation data and profile it, into `row`; return what judged it.

    An artifact whose runtime is only on the device is judged here with the candidate's
    `check_with` backend on the same model file, and not profiled: its latency is predicted.
    """
    row.size_bytes = artifact.size_bytes
    backend = candidate.backend if local else candidate.check_with
    checked = artifact if local else replace(artifact, entry=artifact.runtime_config.get("check_entry", artifact.entry))
    runner = backend.open(checked, threads)
    outputs = predict(runner, evaluation, batch, fixed)
    _judge(row, outputs, reference, evaluation.labels, metric, reference_quality)
    if local:
        _profile(row, runner, sample, measure, _artifact_memory_spec(artifact, threads))
    return Judged(backend.name, backend.version(), checked.entry, [o[:REFERENCE_SAMPLES] for o in outputs])


def _judge(row: Row, outputs: list[np.ndarray], reference: list[np.ndarray], labels: np.ndarray | None, metric: str,
           reference_quality: float) -> None:
    """`row`'s metrics against the original, its quality drop and the drop's 95% CI (edgeml.measure.uncertainty)."""
    row.metrics = compare(outputs, reference, labels)
    row.quality_drop = reference_quality - row.metrics[metric]
    test = drop_uncertainty(outputs, reference, labels, metric)
    row.quality_drop_ci95, row.quality_test = test.pop("ci95"), test


def _fatal(e: Exception, debug: bool) -> bool:
    """Whether an error in one candidate (or its search) ends the run: the user's to fix (EdgemlError, a full
    disk), or anything under --debug. Other errors fail that candidate only."""
    return debug or isinstance(e, EdgemlError) or (isinstance(e, OSError) and e.errno in FULL_DISK)


def _device_status(row: Row, candidate: Candidate, target: Target) -> None:
    """A row that runs on the device only: quality checked here, latency predicted (or unknown)."""
    predicted = row.predicted is not None and row.predicted.get("ms") is not None
    row.status = "predicted" if predicted else "needs device"
    where = (target.elsewhere and target.elsewhere()) or f"{candidate.backend.name} is not installed here"
    row.reason = (f"{where}: the engine is built and run on the device (bundle/build_engine.sh, or "
                  f"`edgeml build-engine`); quality checked here with {candidate.check_with.name} on the same model")


def _mixed_row(candidate: Candidate, tuned: Tuned, run: Run, row: Row, needed: bool) -> Row | None:
    """Record the search; a new row when it kept layers in float and the row is `needed` (else None)."""
    result = tuned.result
    kept = result.best.excluded if needed else ()
    run.tuning[candidate.name] = {
        **result.to_dict(), "metric": tuned.metric,
        "data": "calibration data: ranges, sensitivity and the budget check during the search; "
                "evaluation data: the final numbers in the candidate table",
        "row": f"{candidate.name}-mixed" if kept else None,
        "cached_builds": len(tuned.restored),
    }
    if not kept:
        return None
    mixed = Row(f"{candidate.name}-mixed", candidate.backend.name, f"{candidate.precision}+fp32", "candidate",
                method=f"{candidate.method}; {len(kept)} most sensitive layer(s) kept in fp32 "
                       + ("to meet the accuracy budget" if result.met else "(the closest to the budget it found)")
                       + f": {', '.join(kept)}",
                backend_version=row.backend_version, build_seconds=round(result.seconds, 3),
                cached=kept in tuned.restored)
    run.rows.append(mixed)
    return mixed


def _check_arguments(model, example, data, split, calib_data, eval_data, train_data) -> None:
    if (model is None) == (example is None):
        raise EdgemlError("give a MODEL or --example digits (one of them)")
    if example is not None and example not in EXAMPLES:
        raise EdgemlError(f"unknown example '{example}'; available: {', '.join(EXAMPLES)}")
    if example is not None and any(x is not None for x in (data, calib_data, eval_data, train_data)):
        raise EdgemlError("--example brings its own data; do not combine it with --data/--calib-data/--eval-data/"
                          "--train-data")
    if data is not None and (calib_data is not None or eval_data is not None):
        raise EdgemlError("use either --data (split into calibration and evaluation) or --calib-data/--eval-data")
    if split is not None and data is None:
        raise EdgemlError("--split divides the dataset given with --data; give --data too")


def _load(model, example, weights, input_shapes, data, split, calib_data, eval_data, train_data, preprocess, seed,
          reporter: Reporter, safe: bool) -> tuple[SourceModel, Dataset, Dataset, Dataset | None]:
    if example is not None:
        from edgeml.examples import digits_example, digits_source

        ex = digits_example()
        source = digits_source(ex)
        source.notes.append("built-in digits example: CNN " + ("reused from the cache" if ex.cached else
                            "trained now") + f" ({ex.weights}); calibration = validation split, "
                            "evaluation = test split, training = train split")
        return source, ex.validation, ex.test, ex.train

    with safe_loading() if safe else contextlib.nullcontext():
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
    train = load(train_data) if train_data is not None else None
    if train is not None:
        overlap = data_mod.check_disjoint(train, evaluation)
        if overlap:
            reporter.warn(overlap.replace("calibration", "training"))
    return source, calibration, evaluation, train


def _compress(source: SourceModel, recipe: Recipe, calibration: Dataset, train: Dataset | None, run: Run,
              reporter: Reporter) -> list[tuple[str, SourceModel, str]]:
    """The PyTorch passes the recipe asks for: (row name, model, method) per stage."""
    distill = recipe.distill if recipe.distill is not None else (recipe.prune is not None and train is not None)
    if recipe.prune is None and not distill:
        return []
    if not source.is_torch:
        raise EdgemlError("pruning and distillation change a PyTorch model; MODEL is ONNX: give the PyTorch "
                          "model (package.module:factory with --weights, or a .pt2 file)")
    if distill and train is None:
        raise EdgemlError("distillation trains on data: give --train-data (labels optional), or turn it off")
    from edgeml.pipeline import torch_passes

    stages = []
    student = source
    if recipe.prune is not None:
        config = recipe.prune
        with reporter.step(f"Prune {config.ratio:.0%} of channels ({config.importance})"):
            student, result = torch_passes.prune(source, config, train if train is not None else calibration)
        run.compression["prune"] = result.to_dict()
        stages.append((f"pruned-{round(config.ratio * 100)}", student,
                       f"torch-pruning structured channel pruning, {config.importance} importance, "
                       f"round to {config.round_to}; {student.notes[0]}"))
    if distill:
        epochs = recipe.distill_config.epochs
        with reporter.step("Distill from the original", total=epochs) as step:
            student, result = torch_passes.distill_into(
                source, student, train, replace(recipe.distill_config, seed=recipe.seed),
                on_epoch=lambda epoch, total, record: (step.advance(), step.describe(
                    f"Distill: epoch {epoch}/{total}, validation {record.get('validation', float('nan')):.4f}")))
        run.compression["distill"] = result.to_dict()
        name = f"{stages[-1][0]}+distilled" if stages else "distilled"
        stages.append((name, student, f"knowledge distillation from the original; {student.notes[0]}"))
    return stages


def _onnx_model(source: SourceModel, source_key: dict | None, evaluation: Dataset, work: Path, run: Run,
                reporter: Reporter, store: caching.Cache) -> Path:
    """The ONNX model the candidates are built from: the given file, or the export (restored from the cache
    when the same model, example inputs and exporter versions made it before)."""
    if not source.is_torch:
        return source.path
    from edgeml.inputs.export import export_onnx

    folder = work / "export"                    # with the external data files the exporter may write
    path = folder / "exported.onnx"
    example = {k: data_mod.at_least_two(v) for k, v in evaluation.feeds(0, 2).items()}
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


def _source_key(source: SourceModel) -> dict | None:
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


def _onnx_digest(path: Path) -> dict[str, str]:
    """sha256 of an ONNX model file and of each external data file it names."""
    import onnx

    external = {location for _, location in external_data(onnx.load(str(path), load_external_data=False))}
    return {name: sha256_file(path.parent / name) for name in sorted(external | {path.name})}


def _onnx_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return onnx_input_specs(proto), onnx_output_specs(proto)


def _parity(reference: list[np.ndarray], onnx_path: Path, evaluation: Dataset, batch: int, fixed: bool,
            threads: int, names: list[str]) -> dict:
    from edgeml.inputs.export import check_parity

    n = min(len(evaluation), PARITY_SAMPLES)
    subset = evaluation.subset(np.arange(n), evaluation.source)
    exported = predict(OrtRunner(onnx_path, threads), subset, batch, fixed)
    return check_parity(names, exported, [r[:n] for r in reference]).to_dict()


def _eval_batch(inputs: list[TensorSpec]) -> tuple[int, bool]:
    """(batch, whether the model fixes it): the model's own batch, else EVAL_BATCH bounded by the sample size."""
    first = inputs[0].shape[0] if inputs and inputs[0].shape else None
    if isinstance(first, int):
        return first, True
    per_sample = max(math.prod(d if isinstance(d, int) else 1 for d in s.shape[1:]) for s in inputs)
    return max(1, min(EVAL_BATCH, EVAL_BATCH_ELEMENTS // per_sample)), False


def _profile_sample(evaluation: Dataset, batch: int, fixed: bool) -> dict[str, np.ndarray]:
    """One real evaluation sample (or one fixed-size batch of them) for latency runs."""
    size = batch if fixed else 1
    return {k: np.ascontiguousarray(np.resize(v[:size], (size,) + v.shape[1:]))
            for k, v in evaluation.inputs.items()}


def _reference_backend(source: SourceModel) -> str:
    return "torch" if source.is_torch else "onnxruntime"


def _reference_runner(source: SourceModel, onnx_path: Path, threads: int) -> Runner:
    if source.is_torch:
        from edgeml.runtimes.pytorch import open_source

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
        from edgeml.measure import memory  # not at import time: the probe runs it as __main__

        row.peak_memory_bytes = memory.measure(memory_spec, sample)


def _layer_times(row: Row, artifact: Artifact, sample: dict, threads: int) -> dict:
    """Per-layer time of the selected artifact, from ONNX Runtime's profiler: mean per run, largest first.

    `share` is a layer's part of the time spent in kernels (`kernels_ms`); `run_ms` is the whole
    profiled run, session overhead included. Other backends get `layers` None and the reason.
    """
    record = {"artifact": row.name, "backend": artifact.backend, "threads": threads, "layers": None}
    if row.latency is None:
        return {**record, "reason": "the artifact runs on the device only: nothing about it is timed here"}
    if artifact.backend != "onnxruntime":
        return {**record, "reason": f"per-layer time is read from ONNX Runtime's CPU profiler, which does not run "
                                    f"{artifact.backend} artifacts"}
    import onnx
    import onnxruntime as ort

    model = artifact.folder / artifact.entry
    fewest, most = LAYER_PROFILE_RUNS
    runs = max(fewest, min(most, int(LAYER_PROFILE_SECONDS * 1000 / row.latency["p50_ms"])))
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = threads, 1, 3
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling, options.profile_file_prefix = True, str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        for _ in range(3 + runs):
            session.run(None, sample)
        events = json.loads(Path(session.end_profiling()).read_text())
    timed = sorted((e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"),
                   key=lambda e: e["ts"])[-runs:]
    graph = onnx.load(str(model), load_external_data=False).graph
    nodes = {n.name: n for n in graph.node}
    producers = {o: n.name for n in graph.node for o in n.output}
    totals: dict[str, list] = {}                    # name -> [op, µs, added by the runtime]
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= timed[0]["ts"]:
            kernel, op = e["name"].removesuffix("_kernel_time"), e["args"]["op_name"]
            node = _model_node(kernel, op, nodes, producers)
            totals.setdefault(node or kernel, [op, 0.0, node is None])[1] += e["dur"]
    kernels_us = sum(t[1] for t in totals.values())
    layers = [{"name": name, "op": op, "ms": round(us / runs / 1000, 6), "share": round(us / kernels_us, 6),
               "added_by_runtime": added}
              for name, (op, us, added) in sorted(totals.items(), key=lambda kv: -kv[1][1])]
    ops: dict[str, dict] = {}
    for layer in layers:
        entry = ops.setdefault(layer["op"], {"op": layer["op"], "ms": 0.0, "share": 0.0, "count": 0})
        entry.update(ms=round(entry["ms"] + layer["ms"], 6), share=round(entry["share"] + layer["share"], 6),
                     count=entry["count"] + 1)
    return {**record, "runs": runs, "kernels_ms": round(kernels_us / runs / 1000, 6),
            "run_ms": round(sum(e["dur"] for e in timed) / runs / 1000, 6), "layers": layers,
            "ops": sorted(ops.values(), key=lambda o: -o["ms"]), "reason": None}


def _model_node(kernel: str, op: str, nodes: dict, producers: dict) -> str | None:
    """The model node an ONNX Runtime kernel computes, or None for a node the runtime added.

    The runtime renames the nodes it rewrites: `fused X` and `X_token_N` keep the node's name;
    NCHWc kernels take their output's, which after a Conv+Relu fusion is the Relu's (the Conv is named).
    """
    base = re.sub(r"^fused |(_token_\d+)+$|_nchwc$", "", kernel)
    if base in nodes:
        return base
    node = producers.get(base)
    upstream = producers.get(nodes[node].input[0]) if node and nodes[node].input else None
    return upstream if upstream and nodes[upstream].op_type == op else node


def _data_notes(calibration: Dataset, evaluation: Dataset, train: Dataset | None, metric: str, recipe: Recipe,
                stages: list) -> list[str]:
    used = min(len(calibration), Int8Config.max_calibration_samples)
    notes = [f"calibration: {calibration.source}, {len(calibration)} samples"
             + (f" (INT8 passes calibrate on the first {used})" if used < len(calibration) else "")
             + "; used for INT8 ranges and, when a candidate breaks the budget, for the sensitivity search",
             f"evaluation: {evaluation.source}, {len(evaluation)} samples; used only to judge the rows below"]
    if train is not None:
        notes.append(f"training: {train.source}, {len(train)} samples"
                     + ("; pruning importance and distillation (10% held out for early stopping)" if stages
                        else "; not used (no pruning or distillation asked)"))
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
