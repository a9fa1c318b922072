"""How every row of a run is judged and timed, the same way for all of them.

`Bench` holds what that takes (the evaluation data and the original model's outputs on it, the quality
metric, the batch, the latency sample, threads and measurement settings), so the phases of `optimize` pass
one object instead of long positional lists. `measure_original` makes it, with the original's row.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np

from edgeml.bundle.monitoring import summarize_outputs
from edgeml.bundle.reference import SAMPLES as REFERENCE_SAMPLES
from edgeml.bundle.write import Judged
from edgeml.inputs.data import Dataset
from edgeml.inputs.models import SourceModel
from edgeml.measure.evaluate import compare, predict, quality_metric
from edgeml.measure.latency import MeasureConfig, measure_latency
from edgeml.measure.paired_timing import contest, faster, round_speedup
from edgeml.measure.uncertainty import drop_uncertainty
from edgeml.pipeline.exported import Exported
from edgeml.pipeline.selection import contenders
from edgeml.progress import Reporter, Step
from edgeml.report.record import Row
from edgeml.runtimes import BACKENDS
from edgeml.runtimes.base import Artifact, Runner, package_version
from edgeml.runtimes.onnxruntime import OrtRunner
from edgeml.targets.base import Candidate

PAIRED_SECONDS = 2.0          # close contenders are timed again in alternating rounds for at most this many times
                              # --measure-seconds, all of them together (paired_timing.contest)
CHECK_SECONDS = 1.0           # a decision between two builds of the accuracy-budget phase: this many times


@dataclass(frozen=True)
class Bench:
    evaluation: Dataset
    reference: list[np.ndarray]    # the original model's outputs on the evaluation data
    metric: str
    reference_quality: float
    batch: int
    fixed: bool
    sample: dict[str, np.ndarray]  # the input latency runs use
    threads: int
    measure: MeasureConfig

    @classmethod
    def of(cls, data: Dataset, reference: list[np.ndarray], metric: str, *, batch: int, fixed: bool,
           sample: dict[str, np.ndarray], threads: int, measure: MeasureConfig = MeasureConfig()) -> Bench:
        """A bench judging on `data` by `metric` (already resolved), against the original model's `reference`
        outputs there."""
        return cls(data, reference, metric, compare(reference, reference, data.labels)[metric], batch, fixed, sample,
                   threads, measure)

    def on(self, data: Dataset, reference: list[np.ndarray]) -> Bench:
        """This bench judging on `data` instead (`reference`: the original model's outputs there), as the
        accuracy-budget search does on its tuning data; accuracy falls back to the automatic metric where `data` has
        no labels."""
        if len(reference[0]) != len(data):
            raise ValueError(f"{len(reference[0])} reference outputs for {len(data)} samples")
        metric = quality_metric(reference, data.labels,
                                "auto" if self.metric == "accuracy" and data.labels is None else self.metric)
        return Bench.of(data, reference, metric, batch=self.batch, fixed=self.fixed, sample=self.sample,
                        threads=self.threads, measure=self.measure)

    def predict(self, runner: Runner, data: Dataset | None = None) -> list[np.ndarray]:
        """`runner`'s outputs over the evaluation data (or `data`), in the run's batches."""
        return predict(runner, self.evaluation if data is None else data, self.batch, self.fixed)

    def judge(self, row: Row, outputs: list[np.ndarray]) -> None:
        """`row`'s metrics against the original, its quality drop and the drop's 95% CI (edgeml.measure.uncertainty)."""
        row.metrics = compare(outputs, self.reference, self.evaluation.labels)
        row.quality_drop = self.reference_quality - row.metrics[self.metric]
        test = drop_uncertainty(outputs, self.reference, self.evaluation.labels, self.metric)
        row.quality_drop_ci95, row.quality_test = test.pop("ci95"), test

    def profile(self, row: Row, runner: Runner, memory_spec: dict | None) -> None:
        """`row`'s latency on the sample, and its peak memory in a fresh process when `memory_spec` says how."""
        gc.collect()  # so that collecting earlier rows' garbage does not land in the timed runs
        row.latency = measure_latency(lambda: runner.run(self.sample), self.measure).to_dict()
        if memory_spec is not None:
            from edgeml.measure import memory  # not at import time: the probe runs it as __main__

            row.peak_memory_bytes = memory.measure(memory_spec, self.sample)

    def measure_artifact(self, row: Row, candidate: Candidate, artifact: Artifact, *, local: bool) -> Judged:
        """Judge `artifact` on the evaluation data and profile it, into `row`; return what judged it.

        An artifact whose runtime is only on the device is judged here with the candidate's
        `check_with` backend on the same model file, and not profiled: its latency is predicted.
        """
        row.size_bytes = artifact.size_bytes
        backend = candidate.backend if local else candidate.check_with
        checked = artifact if local else replace(artifact,
                                                 entry=artifact.runtime_config.get("check_entry", artifact.entry))
        runner = backend.open(checked, self.threads)
        outputs = self.predict(runner)
        self.judge(row, outputs)
        if local:
            self.profile(row, runner, artifact_memory_spec(artifact, self.threads))
        return Judged(backend.name, backend.version(), checked.entry, [o[:REFERENCE_SAMPLES] for o in outputs],
                      summarize_outputs(outputs))

    def time_contenders(self, rows: list[Row], artifacts: dict[str, Artifact], max_drop: float, *,
                        original_eligible: bool, reporter: Reporter) -> dict | None:
        """The close contenders within the budget (selection.contenders) timed again, together, in alternating
        rounds: {row name: paired_timing.summarize(...)}; None when fewer than two are close."""
        close = contenders(rows, max_drop, original_eligible=original_eligible)
        if len(close) < 2:
            return None
        names = ", ".join(r.name for r in close)
        with reporter.step(f"Time the close contenders again, in alternating rounds ({names})") as step:
            runners = {r.name: open_artifact(artifacts[r.name], self.threads) for r in close}
            return self.together(runners, self.measure.seconds * PAIRED_SECONDS, step)

    def together(self, runners: dict[str, Runner], seconds: float, step: Step | None = None) -> dict[str, dict]:
        """`runners` timed together on the sample, in alternating rounds within `seconds` (paired_timing.contest):
        {name: paired_timing.summarize(...)}."""
        def progress(r: int, name: str, _) -> None:
            if step is not None:
                step.describe(f"Alternating rounds: round {r + 1}, {name}")
        return contest({name: partial(runner.run, self.sample) for name, runner in runners.items()}, seconds,
                       progress)

    def speedup(self, fast: tuple[str, Runner], slow: tuple[str, Runner], step: Step | None = None) -> dict:
        """How much faster `fast` (name, runner) runs than `slow`, timed together (`together`, CHECK_SECONDS x
        --measure-seconds): paired_timing.round_speedup's record with `faster` (the rule that made it count, or
        None)."""
        timed = self.together(dict([fast, slow]), self.measure.seconds * CHECK_SECONDS, step)
        s = round_speedup(timed[slow[0]], timed[fast[0]])
        return {**s, "faster": faster(s)}


def measure_original(source: SourceModel, exported: Exported, evaluation: Dataset, *, requested_metric: str,
                     threads: int, measure: MeasureConfig, step: Step) -> tuple[Bench, Row, Runner]:
    """The original model judged and timed: the Bench every other row is measured on, the original's row, and
    its runner (the accuracy-budget search runs it again on the calibration data)."""
    backend = "torch" if source.is_torch else "onnxruntime"
    step.describe("Reference: evaluating")
    runner = open_original(source, exported.path, threads)
    reference = predict(runner, evaluation, exported.batch, exported.fixed)
    metric = quality_metric(reference, evaluation.labels, requested_metric, evaluation.source)
    bench = Bench.of(evaluation, reference, metric, batch=exported.batch, fixed=exported.fixed,
                     sample=exported.sample(evaluation), threads=threads, measure=measure)
    row = Row("original", backend, "fp32", "reference", backend_version=package_version(backend),
              method=f"the {source.kind.replace('_', ' ')} as given"
                     + (", PyTorch eager" if source.is_torch else ", ONNX Runtime"))
    bench.judge(row, reference)
    row.size_bytes = source_size(source)
    step.describe("Reference: profiling")
    bench.profile(row, runner, _original_memory_spec(source, threads))
    return bench, row, runner


def open_original(source: SourceModel, onnx_path: Path, threads: int) -> Runner:
    """The original model (or a compression stage of it) ready to run: PyTorch eager, or ONNX Runtime."""
    if source.is_torch:
        from edgeml.runtimes.pytorch import open_source

        return open_source(source, threads)
    return OrtRunner(onnx_path, threads)


def open_artifact(artifact: Artifact, threads: int) -> Runner:
    return BACKENDS[artifact.backend].open(artifact, threads)


def artifact_memory_spec(artifact: Artifact, threads: int) -> dict:
    return {"threads": threads, "artifact": {
        "backend": artifact.backend, "precision": artifact.precision, "folder": str(artifact.folder.resolve()),
        "entry": artifact.entry, "runtime_config": artifact.runtime_config}}


def _original_memory_spec(source: SourceModel, threads: int) -> dict | None:
    if not source.is_torch:
        return artifact_memory_spec(Artifact("onnxruntime", "fp32", source.path.parent, source.path.name), threads)
    return None if source.reload is None else {"threads": threads, "source": source.reload}


def source_size(source: SourceModel) -> int:
    if source.path is not None:
        return source.path.stat().st_size
    return sum(p.numel() * p.element_size() for p in source.module.state_dict().values())
