"""`optimize`: from a trained model to a measured, selected and bundled artifact, in named phases.

    load -> compress (PyTorch passes) -> export to ONNX + parity check -> reference (the original, which
      every row is judged and timed against: edgeml.pipeline.bench) -> candidates (build, validate,
      profile) -> repair (accuracy-budget search) -> close contenders timed again -> select -> bundle
      + report, all written atomically into OUT.

The export and every build go through the cache (edgeml.cache), keyed by what determines them,
so a rerun restores them; validation and profiling always run anew.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

from edgeml import cache as caching
from edgeml.bundle.monitoring import monitoring_block, summarize_outputs
from edgeml.bundle.reference import SAMPLES as REFERENCE_SAMPLES
from edgeml.bundle.write import Judged, write_bundle
from edgeml.compress.quantize import Int8Config
from edgeml.errors import EdgemlError, TargetError
from edgeml.inputs.language_model import is_language_model
from edgeml.measure import cpu_features
from edgeml.measure.latency import MeasureConfig
from edgeml.measure.machine import machine_info
from edgeml.measure.uncertainty import resolution
from edgeml.outdir import AtomicOutput
from edgeml.pipeline import plan
from edgeml.pipeline.bench import measure_original
from edgeml.pipeline.candidates import build_candidates, cached_build, candidates_for, original_artifact
from edgeml.pipeline.context import RunContext
from edgeml.pipeline.exported import onnx_digest, onnx_model, parity, source_key
from edgeml.pipeline.layer_times import layer_times
from edgeml.pipeline.load import Given, Inputs, data_notes, load, make_run_recipe
from edgeml.pipeline.quantization_aware import quantization_aware
from edgeml.pipeline.recipe import Recipe, dump_recipe
from edgeml.pipeline.repair import repair
from edgeml.pipeline.selection import select
from edgeml.pipeline.stages import compress, measure_stages
from edgeml.progress import Reporter
from edgeml.report.markdown import render_markdown
from edgeml.report.record import Run
from edgeml.runtimes import RECORDED
from edgeml.runtimes.base import Artifact, package_version
from edgeml.targets import get_target
from edgeml.targets.base import BuildContext
from edgeml.time_limit import limited
from edgeml.version import __version__


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
    `weights`), or a torch.nn.Module; or pass `example="digits"` for the built-in example. A causal language
    model (a Hugging Face folder or a GGUF file) takes edgeml.pipeline.language_model's phases instead.
    `recipe` (a Recipe or a YAML file) holds the settings; keyword `settings` (the Recipe's
    fields: target, precision, prune, max_accuracy_drop, threads, ...) override it.
    `track="mlflow"` logs the finished run to MLflow (see edgeml.report.tracking). With `cache` on, the exported
    ONNX model and the candidates' builds are kept in `cache_dir` (default: edgeml.cache.cache_dir(); at
    most `cache_max_bytes`, default $EDGEML_CACHE_MAX_BYTES or 5 GiB) and restored by a rerun. `safe=True` refuses
    TorchScript and ExportedProgram files (programs that can run code when loaded). Returns the run record.
    """
    recipe = make_run_recipe(recipe, settings)
    if is_language_model(model):                 # the model-kind seam: a causal LM has its own phases
        from edgeml.pipeline.language_model import optimize_language_model

        return optimize_language_model(
            model, recipe=recipe, calib_data=calib_data, eval_data=eval_data, out=out, force=force,
            reporter=reporter, unused={"--example": example, "--weights": weights, "--input-shape": input_shapes,
                                       "--data": data, "--split": split, "--train-data": train_data,
                                       "--preprocess": preprocess, "--track": track})
    given = Given(model, example, weights, input_shapes, data, split, calib_data, eval_data, train_data, preprocess)
    given.check()
    target = get_target(recipe.target)
    profile = plan.resolve_profile(target, recipe.profile)
    threads = recipe.threads or os.cpu_count() or 1
    measure = MeasureConfig(seconds=recipe.measure_seconds)
    reporter = reporter or Reporter()
    store = caching.Cache((cache_dir or caching.cache_dir()) if cache else None,
                          caching.max_bytes() if cache_max_bytes is None else cache_max_bytes)
    config = {**given.describe(), "recipe": recipe.to_dict(), "threads": threads, "measure": asdict(measure),
              "cache": None if store.folder is None else str(store.folder)}
    out = Path(out) if out else Path("edgeml-out") / f"{given.default_name()}-{recipe.target}"

    with reporter, AtomicOutput(out, force) as staging:
        with reporter.step("Load model" if example is None else "Prepare the digits example"):
            inputs = load(given, seed=recipe.seed, reporter=reporter, safe=safe)
        source, calibration, evaluation = inputs.source, inputs.calibration, inputs.evaluation
        candidates = candidates_for(target, recipe)
        if not source.is_torch and all(c.needs_source for c in candidates):
            raise TargetError(f"target '{target.name}' converts PyTorch models and MODEL is ONNX: give the PyTorch "
                              "model (package.module:factory with --weights, or a .pt2 file)")
        run = _new_run(recipe, config, threads, inputs, profile)
        work = staging / "work"
        work.mkdir()

        stages = compress(inputs, recipe, run, reporter)
        model_used = stages[-1].model if stages else source
        key = source_key(model_used) if model_used.is_torch else None
        if model_used.is_torch and key is None and store.folder is not None:
            reporter.warn("the model's code is not in a file, so it cannot be hashed: nothing of this run is "
                          "cached")
            store, run.config["cache"] = caching.Cache(None), None
        exported = onnx_model(model_used, key, evaluation, work, run, reporter, store)
        plan.check_fits(profile, exported.path)

        with reporter.step(f"Reference: the original model ({'torch' if source.is_torch else 'onnxruntime'})") \
                as step:
            bench, ref_row, original = measure_original(source, exported, evaluation, requested_metric=recipe.metric,
                                                        threads=threads, measure=measure, step=step)
            ref_row.predicted = plan.predict(exported.path, profile, "fp32", recipe.threads)
            run.rows.append(ref_row)
        coarse = resolution(len(evaluation), bench.metric, recipe.max_accuracy_drop)
        if coarse:
            reporter.warn(coarse)
        run.data.update(quality_metric=bench.metric, notes=data_notes(inputs, bench.metric, bool(stages)))

        exported_outputs, exported_drop = measure_stages(stages, bench, exported.path, run, reporter)
        if exported_drop > recipe.max_accuracy_drop:
            reporter.warn(f"the compressed model already loses {exported_drop:.4f} {bench.metric} in FP32, more than "
                          f"the budget {recipe.max_accuracy_drop:g}: prune less, or distill longer or with more data "
                          "(no INT8 accuracy search can win that back)")
        if run.export is not None:
            run.export["parity"] = parity(exported_outputs, exported, evaluation, threads, run.export["output_names"])

        ctx = _context(recipe=recipe, target=target, profile=profile, reporter=reporter, debug=debug, run=run,
                       work=work, exported=exported, bench=bench, inputs=inputs, model_used=model_used, key=key,
                       store=store)
        repairs = build_candidates(ctx, candidates, exported_drop=exported_drop)
        repair(ctx, repairs, original=original, calibration=calibration, train=inputs.train)
        quantization_aware(ctx, repairs, inputs.train)
        paired = bench.time_contenders(run.rows, ctx.artifacts, recipe.max_accuracy_drop,
                                       original_eligible=ctx.original_eligible, reporter=reporter)

        with reporter.step("Select and bundle"):
            _select_and_bundle(ctx, paired, inputs, staging)
        _write_report(run, reporter, recipe, out, staging)
    if track is not None:
        from edgeml.report.tracking import track as track_run

        track_run(run, out, track, reporter)
    return run


def _new_run(recipe: Recipe, config: dict, threads: int, inputs: Inputs, profile) -> Run:
    """The run record as it starts: settings, machine, packages, the model and the data."""
    return Run(edgeml_version=__version__, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
               target=recipe.target, config=config, machine=machine_info(threads),
               packages={p: package_version(p) for p in RECORDED}, source=inputs.source.describe(),
               profile=None if profile is None else profile.to_dict(),
               data={"calibration": inputs.calibration.describe(), "evaluation": inputs.evaluation.describe(),
                     "training": None if inputs.train is None else inputs.train.describe()})


def _context(*, recipe: Recipe, target, profile, reporter: Reporter, debug: bool, run: Run, work: Path, exported,
             bench, inputs: Inputs, model_used, key: dict | None, store: caching.Cache) -> RunContext:
    """The shared context of the build phases: the INT8 scheme for this CPU and how builds are cached."""
    scheme = cpu_features.int8_scheme()
    run.int8_scheme = scheme.to_dict()
    if cpu_features.unrecognised():
        reporter.warn(cpu_features.unrecognised_warning(cpu_features.unrecognised()))
    build_context = BuildContext(calibration=inputs.calibration,
                                 int8=Int8Config(calibration_method=recipe.calibration_method,
                                                 avoid_saturation=scheme.avoid_saturation),
                                 source=model_used if model_used.is_torch else None,
                                 max_accuracy_drop=recipe.max_accuracy_drop, profile=profile)
    build = limited(partial(cached_build, onnx_path=exported.path, store=store,
                            identity={"onnx": onnx_digest(exported.path), "source": key, "seed": recipe.seed}),
                    recipe.tuning_budget)
    ctx = RunContext(recipe, target, profile, reporter, debug, run, work, exported, bench, build_context, build,
                     original_eligible=not inputs.source.is_torch)
    if ctx.original_eligible:                    # where it is: opened to time it, copied only if chosen
        source, original = inputs.source, run.reference
        ctx.artifacts[original.name] = Artifact("onnxruntime", "fp32", source.path.parent, source.path.name)
        ctx.judged[original.name] = Judged("onnxruntime", original.backend_version, source.path.name,
                                           [o[:REFERENCE_SAMPLES] for o in bench.reference],
                                           summarize_outputs(bench.reference))
    return ctx


def _select_and_bundle(ctx: RunContext, paired: dict | None, inputs: Inputs, staging: Path) -> None:
    """Select the row to ship (edgeml.pipeline.selection) and write it as OUT/bundle."""
    recipe, run = ctx.recipe, ctx.run
    run.selection = select(run.rows, recipe.max_accuracy_drop, ctx.bench.metric, ctx.profile,
                           original_eligible=ctx.original_eligible, paired=paired)
    chosen = run.selected
    if chosen is None:
        raise EdgemlError(f"no candidate could be built for target '{recipe.target}': "
                          + "; ".join(f"{r.name}: {r.reason}" for r in run.rows if r.role == "candidate"))
    if not run.selection["within_budget"]:
        ctx.reporter.warn(run.selection["reason"])
    if chosen is run.reference:
        ctx.artifacts[chosen.name] = original_artifact(inputs.source.path, ctx.work / "original")
    artifact, judged = ctx.artifacts[chosen.name], ctx.judged[chosen.name]
    evaluation = inputs.evaluation
    # Random stand-in data says nothing about the traffic a model will see: no drift statistics from it.
    monitoring = None if evaluation.synthetic else monitoring_block(
        evaluation.inputs, {spec.name: s for spec, s in zip(ctx.exported.outputs, judged.summaries)}, recipe.drift)
    run.bundle = write_bundle(staging / "bundle", artifact, chosen, run, ctx.exported.inputs, ctx.exported.outputs,
                              inputs.calibration.preprocessing or evaluation.preprocessing,
                              evaluation.feeds(0, REFERENCE_SAMPLES), judged, monitoring)
    run.layer_times = layer_times(chosen, artifact, ctx.bench.sample, ctx.bench.threads)
    shutil.rmtree(ctx.work)


def _write_report(run: Run, reporter: Reporter, recipe: Recipe, out: Path, staging: Path) -> None:
    run.steps = list(reporter.steps)
    run.warnings = list(reporter.warnings)
    run.output = str(out)
    record = run.to_dict()
    (staging / "report.json").write_text(json.dumps(record, indent=2) + "\n")
    (staging / "report.md").write_text(render_markdown(record))
    (staging / "recipe.yaml").write_text(dump_recipe(recipe))
