"""The accuracy-budget search for one INT8 candidate, run on the calibration data.

Each configuration the search tries is built by the candidate itself (with some layers kept in
float), judged on the calibration data against the original model's outputs there, and timed
briefly. The evaluation data is kept for judging the result, never for choosing it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgeml.compress.quantize.accuracy import SearchResult, Trial, search
from edgeml.inputs.data import Dataset
from edgeml.measure.evaluate import compare, predict, quality_metric
from edgeml.measure.latency import MeasureConfig, measure_latency
from edgeml.measure.uncertainty import resolution
from edgeml.progress import Step
from edgeml.runtimes.base import Artifact
from edgeml.targets.base import BuildContext, Candidate

# Trials are ranked, not reported: a short timing is enough to order them.
TRIAL_MEASURE = MeasureConfig(seconds=0.2, min_runs=20, warmup_seconds=0.05)


@dataclass
class Tuned:
    result: SearchResult
    artifact: Artifact          # the best configuration's build
    metric: str                 # the quality metric on the tuning data
    builds: int                 # configurations built for the search (the reused full INT8 build not counted)
    restored: set[tuple[str, ...]]   # those whose build came from the cache (layers kept in float)


def tune(candidate: Candidate, *, onnx_path: Path, work: Path, context: BuildContext,
         reference_outputs: list[np.ndarray], batch: int, fixed: bool, sample: dict[str, np.ndarray],
         threads: int, max_drop: float, seconds: float, step: Step, metric: str = "auto",
         built: Artifact | None = None, beat: tuple[str, float] | None = None,
         build: Callable[[Candidate, Path, BuildContext], tuple[Artifact, bool]]) -> Tuned:
    """Search layers to keep in float until `candidate`'s quality drop on the calibration data is within budget.
    `reference_outputs` are the original model's outputs on the calibration data; `seconds` bounds the search.

    `metric` is the run's; accuracy falls back to the automatic choice when the calibration data has no labels.
    `built` is the candidate's fully quantized build, reused as the first trial; `beat` is (name, p50 ms) of
    the fastest candidate already within the budget (see `search`). `build(candidate, folder, context)` makes
    each configuration: (artifact, whether it was restored from the cache).
    When the calibration data is too few samples to resolve `max_drop` (see `uncertainty.resolution`), the
    result's `resolution` says so; the search runs as it would otherwise.
    """
    tuning: Dataset = context.calibration
    metric = quality_metric(reference_outputs, tuning.labels,
                            "auto" if metric == "accuracy" and tuning.labels is None else metric)
    reference_quality = compare(reference_outputs, reference_outputs, tuning.labels)[metric]
    layers = candidate.layers(onnx_path)
    artifacts: dict[tuple[str, ...], Artifact] = {}
    builds, restored = [], set()                 # the configurations built, and those the cache gave

    def evaluate(excluded: tuple[str, ...], purpose: str) -> Trial:
        step.describe(f"{candidate.name}: accuracy budget, trial {len(artifacts) + 1} ({purpose})")
        settings = replace(context, int8=replace(context.int8, exclude=excluded))
        if built is not None and not excluded:
            artifact = built
        else:
            artifact, cached = build(candidate, work / f"trial-{len(artifacts):03d}", settings)
            builds.append(excluded)
            if cached:
                restored.add(excluded)
        runner = candidate.backend.open(artifact, threads)
        quality = compare(predict(runner, tuning, batch, fixed), reference_outputs, tuning.labels)[metric]
        latency = measure_latency(lambda: runner.run(sample), TRIAL_MEASURE)
        artifacts[excluded] = artifact
        return Trial(excluded, quality, reference_quality - quality, latency.p50_ms, artifact.size_bytes, purpose)

    def local_errors() -> dict[str, float]:
        step.describe(f"{candidate.name}: accuracy budget, ranking {len(layers)} layers by local error")
        full = artifacts[()]
        return candidate.local_errors(full.folder / full.entry, tuning, layers)

    result = search(layers, evaluate, max_drop, seconds,
                    local_errors=local_errors if candidate.local_errors is not None else None, beat=beat)
    result.resolution = resolution(len(tuning), metric, max_drop, "the calibration data")
    best = artifacts[result.best.excluded]
    for excluded, artifact in artifacts.items():
        if excluded != result.best.excluded and artifact is not built:
            shutil.rmtree(artifact.folder, ignore_errors=True)
    return Tuned(result, best, metric, len(builds), restored)
