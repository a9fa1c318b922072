"""The PyTorch passes of a run (pruning, distillation) and their rows: each stage is judged and timed in
PyTorch like the original, and the last one is the model that is exported and built."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgeml.errors import EdgemlError
from edgeml.inputs.models import SourceModel
from edgeml.pipeline.bench import Bench, open_original, source_size
from edgeml.pipeline.load import Inputs
from edgeml.pipeline.recipe import Recipe
from edgeml.progress import Reporter
from edgeml.report.record import Row, Run
from edgeml.runtimes.base import package_version


@dataclass(frozen=True)
class Stage:
    name: str             # its row's name
    model: SourceModel
    method: str


def compress(inputs: Inputs, recipe: Recipe, run: Run, reporter: Reporter) -> list[Stage]:
    """The PyTorch passes the recipe asks for, in order."""
    source, train = inputs.source, inputs.train
    distill = recipe.distill if recipe.distill is not None else (recipe.prune is not None and train is not None)
    if recipe.prune is None and not distill:
        return []
    if not source.is_torch:
        raise EdgemlError("pruning and distillation change a PyTorch model; MODEL is ONNX: give the PyTorch "
                          "model (package.module:factory with --weights, or a .pt2 file)")
    if distill and train is None:
        raise EdgemlError("distillation trains on data: give --train-data (labels optional), or turn it off")
    from edgeml.compress import torch_passes

    stages = []
    student = source
    if recipe.prune is not None:
        config = recipe.prune
        with reporter.step(f"Prune {config.ratio:.0%} of channels ({config.importance})"):
            student, result = torch_passes.prune(source, config, train if train is not None else inputs.calibration)
        run.compression["prune"] = result.to_dict()
        stages.append(Stage(f"pruned-{round(config.ratio * 100)}", student,
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
        name = f"{stages[-1].name}+distilled" if stages else "distilled"
        stages.append(Stage(name, student, f"knowledge distillation from the original; {student.notes[0]}"))
    return stages


def measure_stages(stages: list[Stage], bench: Bench, onnx_path: Path, run: Run,
                   reporter: Reporter) -> tuple[list[np.ndarray], float]:
    """A row per stage; the last stage's outputs and quality drop (the original's when there is none)."""
    outputs, drop = bench.reference, 0.0
    for stage in stages:
        with reporter.step(f"Stage {stage.name} (PyTorch)") as step:
            runner = open_original(stage.model, onnx_path, bench.threads)
            outputs = bench.predict(runner)
            row = Row(stage.name, "torch", "fp32", "stage", method=stage.method,
                      backend_version=package_version("torch"))
            bench.judge(row, outputs)
            row.size_bytes = source_size(stage.model)
            step.describe(f"{stage.name}: profiling")
            bench.profile(row, runner, None)
            run.rows.append(row)
            drop = row.quality_drop
    return outputs, drop
