"""The last resort of the accuracy-budget phase: quantization-aware distillation (edgeml.compress.quantize.qat).

When an INT8 candidate that can be trained (`Candidate.quantization_aware`) broke the budget, the training data
(--train-data) and the PyTorch model are given, and no other candidate's row within the budget is already as fast
as that candidate with every layer in INT8 (timed together: repair.already_faster; its own `-mixed` row keeps layers
in float), the model is fine-tuned with fake INT8 against itself as teacher and quantized like the candidate: the
`<candidate>-qat` row, every layer in INT8, judged and timed like the others.
Its build (training included) is cached and has the tuning budget as its time limit, like every build.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace
from pathlib import Path

from edgeml.inputs.data import Dataset
from edgeml.pipeline import plan
from edgeml.pipeline.candidates import failure_reason, fatal
from edgeml.pipeline.context import RunContext
from edgeml.pipeline.repair import already_faster
from edgeml.pipeline.selection import fastest_measured
from edgeml.pipeline.tuning import Beat
from edgeml.report.record import Row
from edgeml.runtimes.base import Artifact
from edgeml.targets.base import BuildContext, Candidate

TRAINING_SHARE = 0.7       # of the tuning budget, for the training; export and quantization take the rest


def quantization_aware(ctx: RunContext, repairs: list[tuple[Candidate, Row]], train: Dataset | None) -> None:
    """A `-qat` row for each trainable INT8 candidate of `repairs`; what happened goes to run.tuning."""
    for candidate, row in repairs:
        if not candidate.quantization_aware:
            continue
        record = ctx.run.tuning.setdefault(candidate.name, {})
        reason = _why_not(ctx, row, train)
        if reason:
            record["quantization_aware"] = {"stopped": f"not run: {reason}"}
            continue
        record["quantization_aware"] = _build_row(ctx, candidate, row, train)


def _why_not(ctx: RunContext, row: Row, train: Dataset | None) -> str | None:
    source = ctx.build_context.source
    if train is None:
        return "it needs training data (--train-data; labels optional)"
    if source is None or source.kind not in ("module", "factory"):
        return "it fine-tunes a PyTorch module: give the model as package.module:factory with --weights"
    # The candidate's own -mixed row does not count: it keeps layers in float, and what training buys is all INT8.
    others = [r for r in ctx.run.rows if r.name != f"{row.name}-mixed"]
    fastest = fastest_measured(others, ctx.recipe.max_accuracy_drop, original_eligible=ctx.original_eligible)
    return None if fastest is None else already_faster(
        ctx, Beat(fastest.name, fastest.latency["p50_ms"], ctx.artifacts[fastest.name], ctx.bench.threads), row)


def _build_row(ctx: RunContext, candidate: Candidate, row: Row, train: Dataset) -> dict:
    from edgeml.compress.quantize import qat

    recipe, bench = ctx.recipe, ctx.bench
    name = f"{candidate.name}-qat"
    training_seconds = recipe.tuning_budget * TRAINING_SHARE

    def build(model: Path, out: Path, context: BuildContext) -> Artifact:
        out.mkdir(parents=True, exist_ok=True)
        result = qat.quantization_aware(context.source, train, context.calibration, out / "model.onnx",
                                        qat.QatConfig(int8=context.int8), seconds=training_seconds)
        return Artifact(candidate.backend.name, "int8", out, "model.onnx", notes=tuple(result.notes))

    # The cache keys a build by its candidate's name and inputs: the name carries the training data and time.
    key = hashlib.sha256(f"{train.sha256}:{training_seconds}".encode()).hexdigest()[:16]
    trained = replace(candidate, name=f"{name}-{key}", build=build)
    started = time.monotonic()
    qat_row = Row(name, candidate.backend.name, "int8", "candidate",
                  method=f"{candidate.method}, after quantization-aware distillation: fine-tuned with fake INT8 "
                         "against the model as teacher on the training data", backend_version=row.backend_version)
    ctx.run.rows.append(qat_row)
    with ctx.reporter.step(f"Accuracy budget: {name}, quantization-aware distillation") as step:
        try:
            artifact, qat_row.cached = ctx.build(trained, ctx.work / name, ctx.build_context)
            step.cached = qat_row.cached
            qat_row.build_seconds = round(time.monotonic() - started, 3)
            ctx.judged[name] = bench.measure_artifact(qat_row, candidate, artifact, local=True)
            ctx.artifacts[name] = artifact
            qat_row.predicted = plan.predict(ctx.exported.path, ctx.profile, "int8", recipe.threads)
        except Exception as e:
            if fatal(e, ctx.debug):
                raise
            qat_row.status = "failed"
            qat_row.reason = failure_reason(e)
            step.fail(qat_row.reason)
            return {"stopped": f"failed: {qat_row.reason}", "seconds": round(time.monotonic() - started, 3)}
    return {"row": name, "notes": list(artifact.notes), "drop": qat_row.quality_drop,
            "met": bool(qat_row.within_budget), "p50_ms": qat_row.latency["p50_ms"],
            "seconds": qat_row.build_seconds, "cached": qat_row.cached}
