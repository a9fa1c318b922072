"""The accuracy-budget phase of `optimize`: for each INT8 candidate that broke the budget, a search for the
layers to keep in float (edgeml.pipeline.tuning), run after every candidate is measured so that it can stop
once it cannot beat a candidate already within the budget."""

from __future__ import annotations

from edgeml.errors import first_line
from edgeml.inputs.data import Dataset
from edgeml.pipeline import plan
from edgeml.pipeline.candidates import fatal
from edgeml.pipeline.context import RunContext
from edgeml.pipeline.selection import fastest_measured
from edgeml.pipeline.tuning import Tuned, tune
from edgeml.report.record import Row, Run
from edgeml.runtimes.base import Runner
from edgeml.targets.base import Candidate


def repair(ctx: RunContext, repairs: list[tuple[Candidate, Row]], *, original: Runner, calibration: Dataset) -> None:
    """Search each of `repairs` (fastest first); add a `-mixed` row where layers kept in float are worth it.
    `original` runs the original model, on the `calibration` data the search judges on."""
    recipe, run, bench = ctx.recipe, ctx.run, ctx.bench
    reference_on_calibration = None
    for candidate, row in sorted(repairs, key=lambda pair: pair[1].latency["p50_ms"]):
        fastest = fastest_measured(run.rows, recipe.max_accuracy_drop, original_eligible=ctx.original_eligible)
        beat = None if fastest is None else (fastest.name, fastest.latency["p50_ms"])
        if beat is not None and beat[1] <= row.latency["p50_ms"]:
            run.tuning[candidate.name] = {
                "reason": f"{beat[0]} is within the budget and already faster ({beat[1]:.3f} ms) than "
                          f"{candidate.name} with every layer in INT8 ({row.latency['p50_ms']:.3f} ms)"}
            continue
        with ctx.reporter.step(f"Accuracy budget: {candidate.name}") as step:
            try:
                if reference_on_calibration is None:
                    step.describe("Accuracy budget: the original model on the calibration data")
                    reference_on_calibration = bench.predict(original, calibration)
                tuned = tune(candidate, onnx_path=ctx.exported.path, work=ctx.work / f"{candidate.name}-tuning",
                             context=ctx.build_context, reference_outputs=reference_on_calibration,
                             batch=bench.batch, fixed=bench.fixed, sample=bench.sample, threads=bench.threads,
                             max_drop=recipe.max_accuracy_drop, seconds=recipe.tuning_budget, step=step,
                             metric=bench.metric, built=ctx.artifacts[candidate.name], beat=beat, build=ctx.build)
                step.cached = bool(tuned.restored) and len(tuned.restored) == tuned.builds
                if tuned.result.resolution:
                    ctx.reporter.warn(f"{candidate.name}: {tuned.result.resolution}")
                # A mixed row that misses the budget matters only when no candidate is within it.
                mixed = _mixed_row(candidate, tuned, run, row, needed=tuned.result.met or beat is None)
                if mixed is not None:
                    step.describe(f"{mixed.name}: evaluating")
                    ctx.judged[mixed.name] = bench.measure_artifact(mixed, candidate, tuned.artifact, local=True)
                    ctx.artifacts[mixed.name] = tuned.artifact
                    mixed.predicted = plan.predict(ctx.exported.path, ctx.profile, mixed.precision, recipe.threads)
            except Exception as e:
                if fatal(e, ctx.debug):
                    raise
                run.tuning[candidate.name] = {"reason": f"the search failed: {type(e).__name__}: {first_line(e)}"}
                step.fail(run.tuning[candidate.name]["reason"])


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
