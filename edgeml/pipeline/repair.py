"""The accuracy-budget phase of `optimize`: for each INT8 candidate that broke the budget, a search for other
calibrations and the layers to keep (or quantizers to revert) in float (edgeml.pipeline.tuning), run after every
candidate is measured so that it can stop once it cannot beat a candidate already within the budget. Its result
makes a `-mixed` row (layers kept in float or quantizers reverted, with the calibration it chose) or a `-calibrated`
row (every layer in INT8, another calibration).

A candidate whose quantizer has its own accuracy control (`Candidate.accuracy_control`: NNCF's
quantize_with_accuracy_control for OpenVINO) runs it too, on the same data, metric and reference outputs, in
what the search leaves of the tuning budget (the search gets half); its result is timed like the search's
trials and joins them, and the better of the two (`accuracy.best_trial`: within the budget, then fewer layers in
float unless the other is clearly faster; else the smaller drop) makes the `-mixed` row.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import replace

import numpy as np

from edgeml.compress.quantize.accuracy import AIM_FLOOR, MARGIN_SE, Trial, best_trial, mark_pareto
from edgeml.errors import first_line
from edgeml.inputs.data import Dataset
from edgeml.measure.evaluate import sample_scores
from edgeml.measure.paired_timing import verdict_text
from edgeml.pipeline import plan
from edgeml.pipeline.bench import Bench, open_artifact
from edgeml.pipeline.candidates import fatal
from edgeml.pipeline.context import RunContext
from edgeml.pipeline.selection import fastest_measured
from edgeml.pipeline.tuning import Beat, Tuned, calibrated, fastest_config, judged, tune, tuning_data
from edgeml.progress import Step
from edgeml.report.record import Row, Run
from edgeml.runtimes.base import Artifact, Runner
from edgeml.targets.base import Candidate
from edgeml.time_limit import TimeLimit


def repair(ctx: RunContext, repairs: list[tuple[Candidate, Row]], *, original: Runner, calibration: Dataset,
           train: Dataset | None = None) -> None:
    """Search each of `repairs` (fastest first); add a `-mixed` row where layers kept in float are worth it.
    `original` runs the original model, on the data the search judges on: `calibration`, plus `train` samples
    when it takes more to resolve the budget (`tuning.tuning_data`)."""
    recipe, run, bench = ctx.recipe, ctx.run, ctx.bench
    judging = tuning_data(calibration, train, bench.metric, recipe.max_accuracy_drop)
    judge: Bench | None = None                     # `bench` on the tuning data, made once it is needed
    for candidate, row in sorted(repairs, key=lambda pair: pair[1].latency["p50_ms"]):
        fastest = fastest_measured(run.rows, recipe.max_accuracy_drop, original_eligible=ctx.original_eligible)
        beat = None if fastest is None else Beat(fastest.name, fastest.latency["p50_ms"], ctx.artifacts[fastest.name],
                                                 bench.threads)
        with ctx.reporter.step(f"Accuracy budget: {candidate.name}") as step:
            try:
                why_not = already_faster(ctx, beat, row, step)
                if why_not:
                    run.tuning[candidate.name] = {"reason": why_not}
                    step.describe(f"{candidate.name}: no search, {why_not}")
                    continue
                if judge is None:
                    step.describe("Accuracy budget: the original model on the tuning data")
                    judge = bench.on(judging, bench.predict(original, judging))
                started = time.monotonic()
                seconds = recipe.tuning_budget / 2 if candidate.accuracy_control else recipe.tuning_budget
                also = {other: ctx.artifacts[other].runtime_config for other, _ in candidate.runs_also_as
                        if other in ctx.artifacts}
                tuned = tune(candidate, judge, onnx_path=ctx.exported.path, work=ctx.work / f"{candidate.name}-tuning",
                             context=ctx.build_context, build=ctx.build, max_drop=recipe.max_accuracy_drop,
                             seconds=seconds, step=step, built=ctx.artifacts[candidate.name], beat=beat,
                             runs_also_as=also,
                             evaluation_drop=row.quality_drop if judge.metric == bench.metric else None)
                control = None if candidate.accuracy_control is None else _accuracy_control(
                    ctx, candidate, tuned, judge, recipe.tuning_budget - (time.monotonic() - started), step, also)
                step.cached = (bool(tuned.restored) and len(tuned.restored) == tuned.builds
                               and (control is None or control.get("cached", False)))
                if tuned.result.resolution:
                    ctx.reporter.warn(f"{candidate.name}: {tuned.result.resolution}")
                # A mixed row that misses the budget matters only when no candidate is within it.
                mixed = _mixed_row(candidate, tuned, run, row, needed=tuned.result.met or beat is None,
                                   control=control)
                if mixed is not None:
                    step.describe(f"{mixed.name}: evaluating")
                    ctx.judged[mixed.name] = bench.measure_artifact(mixed, candidate, tuned.artifact, local=True)
                    ctx.artifacts[mixed.name] = tuned.artifact
                    mixed.predicted = plan.predict(ctx.exported.path, ctx.profile, mixed.precision, recipe.threads)
                    for other, precision in candidate.runs_also_as:
                        _mixed_as(ctx, candidate, mixed, tuned.artifact, other,
                                  precision if in_float(tuned.result.best) else candidate.precision)
            except Exception as e:
                if fatal(e, ctx.debug):
                    raise
                run.tuning[candidate.name] = {"reason": f"the search failed: {type(e).__name__}: {first_line(e)}"}
                step.fail(run.tuning[candidate.name]["reason"])


def already_faster(ctx: RunContext, beat: Beat | None, row: Row, step: Step | None = None) -> str | None:
    """Why `row` (a candidate with every layer in INT8) cannot beat `beat`, the fastest row within the budget, so
    that no layer kept in float (only slower) can: timed together, it is not faster (paired_timing.faster); None when
    it is, or when there is no `beat`. Its p50 below the beat's goes on untimed: going on is the safe side."""
    if beat is None or row.latency["p50_ms"] < beat.p50_ms:
        return None
    if step is not None:
        step.describe(f"{row.name}: timed together with {beat.name}")
    s = ctx.bench.speedup((row.name, open_artifact(ctx.artifacts[row.name], ctx.bench.threads)),
                          (beat.name, beat.runner), step)
    if s["faster"]:
        return None
    return (f"{beat.name} is within the budget, and {row.name} with every layer in INT8 is no faster than it, "
            f"timed together ({row.name} at {s['ratio']:.2f}x its speed: {verdict_text(s)})")


def _mixed_row(candidate: Candidate, tuned: Tuned, run: Run, row: Row, needed: bool,
               control: dict | None = None) -> Row | None:
    """Record the search (and the quantizer's own accuracy control, `control`); a new row when the better of them
    kept layers in float (`-mixed`) or calibrated otherwise (`-calibrated`) and the row is `needed` (else None)."""
    result = tuned.result
    best = result.best if needed else Trial((), 0.0, 0.0, 0.0, 0)
    kept, calibration, reverted = best.excluded, best.calibration, best.reverted
    chosen = control is not None and control.get("chosen", False)
    name = f"{candidate.name}-mixed" if in_float(best) else f"{candidate.name}-calibrated" if calibration else None
    run.tuning[candidate.name] = {
        **result.to_dict(), "metric": tuned.metric,
        "data": tuned.data,
        "evaluation_drop": row.quality_drop,
        "row": name,
        "cached_builds": len(tuned.restored),
        **({"accuracy_control": control} if control is not None else {}),
    }
    if name is None:
        return None
    outcome = "to meet the accuracy budget" if result.met else "(the closest to the budget it found)"
    changes = [calibration] if calibration else []
    if kept:
        changes.append(f"{len(kept)} most sensitive layer(s) kept in fp32 "
                       + (f"by {control['method']} " if chosen else "") + f"{outcome}: {', '.join(kept)}")
    elif reverted:
        changes.append(f"{len(reverted)} quantizer(s) reverted to fp32 {outcome}: {named(reverted)}")
    else:
        changes.append(f"every layer in INT8, {outcome}")
    mixed = Row(name, candidate.backend.name, f"{candidate.precision}+fp32" if in_float(best) else candidate.precision,
                "candidate", method="; ".join([candidate.method, *changes]),
                backend_version=row.backend_version,
                build_seconds=round(result.seconds + (control or {}).get("seconds", 0.0), 3),
                cached=control["cached"] if chosen else (kept, calibration, reverted) in tuned.restored)
    run.rows.append(mixed)
    return mixed


def in_float(trial: Trial) -> bool:
    """Whether `trial` keeps layers in float or reverted quantizers to float (a `-mixed` build)."""
    return bool(trial.excluded or trial.reverted)


def named(names: tuple[str, ...], shown: int = 8) -> str:
    """The first `shown` of `names`, and how many more."""
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def _mixed_as(ctx: RunContext, candidate: Candidate, mixed: Row, artifact: Artifact, other: str,
              precision: str) -> None:
    """The `mixed` row's model run with the runtime config of the candidate `other` (which runs `candidate`'s
    model with another config: openvino-int8-bf16, the layers kept in float then in bf16), where `other` was built
    here: the row `<other>-mixed` (or `-calibrated`), judged and timed like the rest."""
    built = ctx.artifacts.get(other)
    if built is None:
        return
    floats = f" (the layers in float run in {precision.split('+')[-1]})" if "+" in precision else ""
    row = Row(other + mixed.name.removeprefix(candidate.name), candidate.backend.name, precision, "candidate",
              method=f"{mixed.method}; run as {other}{floats}",
              backend_version=mixed.backend_version,
              build_seconds=mixed.build_seconds, cached=mixed.cached)
    ctx.run.rows.append(row)
    configured = replace(artifact, runtime_config=built.runtime_config)
    ctx.judged[row.name] = ctx.bench.measure_artifact(row, candidate, configured, local=True)
    ctx.artifacts[row.name] = configured
    row.predicted = plan.predict(ctx.exported.path, ctx.profile, candidate.precision, ctx.recipe.threads)


def _accuracy_control(ctx: RunContext, candidate: Candidate, tuned: Tuned, judge: Bench, seconds: float, step: Step,
                      runs_also_as: dict[str, dict]) -> dict:
    """`candidate`'s own accuracy control, built (through the cache) within `seconds` with the calibration the search
    chose, judged as the search judges (`judge`: its data, metric and the original model's outputs there), and timed
    like its trials (also in the configs of `runs_also_as`). Its trial joins the search's; when it measures better
    than the search's best it becomes `tuned`'s best (and artifact). Returns what run.tuning records of it."""
    control, data, reference = candidate.accuracy_control, judge.evaluation, judge.reference
    budget = tuned.result.aim or ctx.recipe.max_accuracy_drop         # as low as the search aimed
    record: dict = {"method": control.method}
    if tuned.result.met and not in_float(tuned.result.best):
        return {**record, "stopped": "not run: with every layer in INT8 it is within the budget on the tuning data"}
    if seconds <= 0:
        return {**record, "stopped": "the search used the whole tuning budget"}
    step.describe(f"{candidate.name}: accuracy budget, {control.method}")
    started, metric = time.monotonic(), tuned.metric

    def score(index: list[int], outputs: list[np.ndarray]) -> np.ndarray:
        if time.monotonic() - started > seconds:
            raise TimeLimit(f"time limit ({seconds:.0f} s, what the search left of the tuning budget)")
        return sample_scores(outputs, [r[index] for r in reference],
                             None if data.labels is None else data.labels[index], metric)

    # NNCF judges its result by the drop alone: it aims lower by the margin the search's best trial needed
    lower = max(budget - MARGIN_SE * tuned.result.best.drop_se, AIM_FLOOR * budget)
    # The cache keys a build by its candidate's name and inputs: the name carries what this one is judged by.
    judged_by = hashlib.sha256(f"{metric}:{data.sha256}".encode()).hexdigest()[:16]
    controlled = replace(candidate, name=f"{candidate.name}-accuracy-control-{judged_by}",
                         build=lambda model, out, context: control.build(model, out, context, data, score))
    try:
        artifact, cached = ctx.build(controlled, ctx.work / f"{candidate.name}-tuning" / "accuracy-control",
                                     replace(calibrated(ctx.build_context, candidate, tuned.result.calibration),
                                             max_accuracy_drop=lower))
    except TimeLimit as e:
        return {**record, "stopped": first_line(e), "seconds": round(time.monotonic() - started, 3)}
    except Exception as e:        # the search's result stands without it
        if fatal(e, ctx.debug):
            raise
        return {**record, "stopped": f"failed: {type(e).__name__}: {first_line(e)}",
                "seconds": round(time.monotonic() - started, 3)}
    kept = control.kept(artifact.folder / artifact.entry, candidate.layers(ctx.exported.path))
    runner = candidate.backend.open(artifact, judge.threads)
    quality, drop_se = judged(judge, judge.predict(runner))
    drop = judge.reference_quality - quality
    timed_as, p50 = fastest_config(candidate, artifact, runner, judge.sample, judge.threads, runs_also_as)
    trial = Trial(kept, quality, drop, p50, artifact.size_bytes, f"{control.method}: {len(kept)} layer(s) in float",
                  timed_as=timed_as, calibration=tuned.result.calibration, drop_se=drop_se)
    met = trial.within(budget)
    result = tuned.result
    result.trials.append(trial)
    mark_pareto(result.trials)
    tuned.timing.add(trial, artifact)
    best = best_trial([result.best, trial], budget, tuned.timing.as_fast)
    if best is trial:
        if tuned.artifact is not ctx.artifacts[candidate.name]:
            shutil.rmtree(tuned.artifact.folder, ignore_errors=True)
        tuned.artifact, result.best, result.met = artifact, trial, met
    else:
        shutil.rmtree(artifact.folder, ignore_errors=True)
    return {**record, "met": met, "drop": drop, "excluded": list(kept), "p50_ms": p50,
            "seconds": round(time.monotonic() - started, 3), "cached": cached, "chosen": best is trial}

