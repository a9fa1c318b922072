"""The candidate phase of `optimize`: each of the target's candidates built (through the cache), judged and
timed, or skipped with the reason."""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict
from pathlib import Path

from edgeml import cache as caching
from edgeml.errors import FULL_DISK, EdgemlError, TargetError, first_line
from edgeml.inputs.models import external_data
from edgeml.pipeline import plan
from edgeml.pipeline.context import RunContext
from edgeml.pipeline.recipe import Recipe
from edgeml.report.record import Row
from edgeml.runtimes import RECORDED
from edgeml.runtimes.base import Artifact, package_version
from edgeml.targets.base import BuildContext, Candidate, Target
from edgeml.time_limit import TimeLimit


def candidates_for(target: Target, recipe: Recipe) -> list[Candidate]:
    """The target's candidates that the recipe's precision and quantizer allow. A precision asked for takes the
    candidates of that precision whose other parts compute in FP32 (`--precision int8` leaves out openvino-int8-bf16,
    whose float parts run in bf16: what INT8 alone does, on a CPU with BF16 too)."""
    chosen = [c for c in target.candidates
              if (recipe.precision == "auto" or c.precision == recipe.precision
                  and set((c.computes_in or c.precision).split("+")[1:]) <= {"fp32"})
              and (recipe.quantizer == "auto" or c.quantizer in (None, recipe.quantizer))
              and (not c.opt_in or c.quantizer == recipe.quantizer)]
    if not chosen:
        offered = sorted({f"{c.precision}" for c in target.candidates})
        raise TargetError(f"target '{target.name}' has no candidate with precision {recipe.precision} and "
                          f"quantizer {recipe.quantizer}; it offers precisions {', '.join(offered)}")
    return chosen


def cached_build(candidate: Candidate, folder: Path, context: BuildContext, *, onnx_path: Path, store: caching.Cache,
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
        packages={m: package_version(m) for m in sorted(set(RECORDED + modules))})

    def make() -> dict:
        artifact = candidate.build(onnx_path, folder, context)
        return {"backend": artifact.backend, "precision": artifact.precision, "entry": artifact.entry,
                "runtime_config": artifact.runtime_config, "notes": list(artifact.notes)}
    stored, restored = store.fetch(name, folder, make)
    return Artifact(folder=folder, **{**stored, "notes": tuple(stored.get("notes", ()))}), restored


def build_candidates(ctx: RunContext, candidates: list[Candidate], *,
                     exported_drop: float) -> list[tuple[Candidate, Row]]:
    """A row per candidate, built, judged and timed where it can be; the INT8 rows that broke the budget and
    that an accuracy-budget search may repair (none when the FP32 model itself is over the budget)."""
    recipe, run, reporter = ctx.recipe, ctx.run, ctx.reporter
    repairs = []
    for candidate in candidates:
        missing = candidate.missing()
        row = Row(candidate.name, candidate.backend.name, candidate.precision, "candidate",
                  method=candidate.method, backend_version=None if missing else candidate.backend.version())
        run.rows.append(row)
        if missing:
            row.status = "unavailable"
            row.reason = f"{', '.join(missing)} not installed ({candidate.backend.install})"
            reporter.warn(f"{candidate.name}: {row.reason}")
            continue
        if candidate.as_given and ctx.original_eligible:
            row.status, row.reason = "skipped", ("the ONNX model as it is: the original row is this model, and "
                                                 "a candidate itself (shipped unchanged)")
            continue
        unsuited = (plan.unsuited(candidate, ctx.profile, ctx.build_context.source is not None)
                    or (candidate.applies(ctx.exported.path) if candidate.applies else None))
        if unsuited:
            row.status, row.reason = "skipped", unsuited
            continue
        local = ctx.target.measures_here(candidate)
        if not local and candidate.check_with is None:
            row.status, row.reason = "skipped", ctx.target.elsewhere()
            continue
        with reporter.step(f"Candidate {candidate.name}") as step:
            try:
                step.describe(f"{candidate.name}: building")
                started = time.perf_counter()
                artifact, row.cached = ctx.build(candidate, ctx.work / candidate.name, ctx.build_context)
                step.cached = row.cached
                row.attempts = list(artifact.notes)
                row.build_seconds = round(time.perf_counter() - started, 3)
                step.describe(f"{candidate.name}: evaluating")
                ctx.judged[candidate.name] = ctx.bench.measure_artifact(row, candidate, artifact, local=local)
                ctx.artifacts[candidate.name] = artifact
                row.predicted = plan.predict(ctx.exported.path, ctx.profile,
                                             candidate.computes_in or candidate.precision, recipe.threads,
                                             dla=candidate.needs_dla)
                if not local:
                    _device_status(row, candidate, ctx.target)
                if (candidate.layers is not None and local
                        and row.quality_drop > recipe.max_accuracy_drop
                        and exported_drop <= recipe.max_accuracy_drop):
                    repairs.append((candidate, row))
            except Exception as e:
                if fatal(e, ctx.debug):
                    raise
                row.status = "failed"
                row.reason = failure_reason(e)
                step.fail(row.reason)
    return repairs


def failure_reason(e: Exception) -> str:
    """A failed row's reason: a time limit's own message, else the error's type and first line."""
    return first_line(e) if isinstance(e, TimeLimit) else f"{type(e).__name__}: {first_line(e)}"


def original_artifact(model: Path, folder: Path) -> Artifact:
    """The ONNX model the user gave, as a candidate: its file and external data files copied byte for byte."""
    import onnx

    folder.mkdir()
    files = [location for _, location in external_data(onnx.load(str(model), load_external_data=False))]
    for name in dict.fromkeys([model.name, *files]):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model.parent / name, folder / name)
    return Artifact("onnxruntime", "fp32", folder, model.name)


def fatal(e: Exception, debug: bool) -> bool:
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
