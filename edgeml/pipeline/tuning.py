"""The accuracy-budget search for one INT8 candidate, judged on evaluation-independent data.

Each configuration the search tries is built by the candidate itself (with some quantizers reverted, or some
layers kept in float, calibrated on the first `Int8Config.max_calibration_samples` calibration samples, as usual or
with one of the alternatives its quantizer offers: `Candidate.calibrations`), judged against the original model's
outputs on the tuning data (`tuning_data`), and timed briefly. The quantizers are ranked on the first samples of the
tuning data in one switchable model (`ranking`), against the original model's outputs there.
The evaluation data is kept for judging the result, never for choosing it.

A candidate whose model also runs with another runtime config (`Candidate.runs_also_as`: openvino-int8's IR
run as openvino-int8-bf16, the layers kept in float then in bf16) has each trial timed in every such config,
and the trial's p50 is the fastest: the search's stop "slower than the fastest candidate within the budget"
must not compare a layer kept in f32 against a bf16 candidate when the same build runs those layers in bf16.
The short timings only order the trials; every decision the search takes on speed (stop: no faster than the best
row within the budget; keep: as fast as the fastest trial) times the builds together, in alternating rounds
(`TrialTiming`).

The tuning data is the calibration data, plus training samples when the calibration data alone is
too few to resolve the budget (`uncertainty.resolution`: with 64 samples one changed prediction
is 1.6 points, so a 1-point budget could accept no change at all) and training data was given.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from edgeml.batching import batched
from edgeml.compress.quantize.accuracy import QuantizerRanking, SearchResult, Trial, search
from edgeml.hashing import sha256_folder
from edgeml.inputs.data import Dataset
from edgeml.measure.evaluate import sample_scores
from edgeml.measure.latency import MeasureConfig, measure_latency
from edgeml.measure.paired_timing import CLOSE, MOST_CONTENDERS, faster, round_speedup, verdict_text, versus_fastest
from edgeml.measure.uncertainty import resolution
from edgeml.pipeline.bench import CHECK_SECONDS, Bench, open_artifact
from edgeml.progress import Step
from edgeml.runtimes.base import Artifact, Runner
from edgeml.targets.base import BuildContext, Candidate

# Trials are ranked, not reported: a short timing is enough to order them.
TRIAL_MEASURE = MeasureConfig(seconds=0.2, min_runs=20, warmup_seconds=0.05)
SEED = 0                    # which training samples join the tuning data
RANKING_SAMPLES = 32        # of the tuning data, at most the first this many rank the quantizers
FEWEST_RANKING_SAMPLES = 4  # and at least this many


def samples_needed(metric: str, max_drop: float) -> int:
    """The fewest samples that resolve `max_drop` for `metric`: the least n `uncertainty.resolution` accepts."""
    if resolution(1, metric, max_drop) is None:
        return 1
    low, high = 1, 2                        # resolution(low) fails; find a high that passes, then bisect
    while resolution(high, metric, max_drop) is not None:
        low, high = high, 2 * high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if resolution(middle, metric, max_drop) is None else (middle, high)
    return high


def tuning_data(calibration: Dataset, train: Dataset | None, metric: str, max_drop: float) -> Dataset:
    """The data the search judges on: `calibration`, plus as many `train` samples (drawn at random, seeded) as
    it takes to resolve `max_drop` (all of them when that is not enough). Labels are kept when both have them."""
    missing = samples_needed(metric, max_drop) - len(calibration)
    if train is None or missing <= 0:
        return calibration
    count = min(missing, len(train))
    index = np.sort(np.random.default_rng(SEED).choice(len(train), count, replace=False))
    extra = train.subset(index, train.source)
    labels = None if calibration.labels is None or extra.labels is None else \
        np.concatenate([calibration.labels, extra.labels])
    return replace(calibration, inputs={k: np.concatenate([v, extra.inputs[k]]) for k, v in calibration.inputs.items()},
                   labels=labels, source=f"{calibration.source} + {count} training samples from {train.source}")


def fastest_config(candidate: Candidate, artifact: Artifact, runner, sample: dict[str, np.ndarray], threads: int,
                   runs_also_as: dict[str, dict]) -> tuple[str, float]:
    """(name, p50 ms) of the fastest way to run `artifact`: as `candidate` (with `runner`, already open) or with
    the runtime config of each of `runs_also_as` (candidate name: config), each timed briefly (`TRIAL_MEASURE`)."""
    timings = {candidate.name: measure_latency(lambda: runner.run(sample), TRIAL_MEASURE).p50_ms}
    for name, config in runs_also_as.items():
        other = candidate.backend.open(replace(artifact, runtime_config=config), threads)
        timings[name] = measure_latency(lambda: other.run(sample), TRIAL_MEASURE).p50_ms
    return min(timings.items(), key=lambda item: item[1])


def judged(bench: Bench, outputs: list[np.ndarray]) -> tuple[float, float]:
    """(quality, the standard error of its drop) of `outputs` on `bench`'s data: the drop's per-sample parts (the
    original's score of a sample less this one's), their spread over the root of their count."""
    ours = sample_scores(outputs, bench.reference, bench.evaluation.labels, bench.metric)
    drops = sample_scores(bench.reference, bench.reference, bench.evaluation.labels, bench.metric) - ours
    return float(ours.mean()), float(drops.std(ddof=1) / np.sqrt(len(drops))) if len(drops) > 1 else 0.0


def calibrated(context: BuildContext, candidate: Candidate, calibration: str) -> BuildContext:
    """`context` with `candidate`'s alternative calibration named `calibration` ("": as it is)."""
    if not calibration:
        return context
    offered = next(c for c in candidate.calibrations if c.name == calibration)
    return replace(context, int8=offered.applied(context.int8))


def ranking(candidate: Candidate, model: Path, onnx_path: Path, bench: Bench, seconds: float) -> QuantizerRanking:
    """`candidate`'s quantizers of its build `model` (made from `onnx_path`), and the build's output error with any of
    them reverted, on the first samples of `bench`'s data (against the original model's outputs there): as many as
    ranking each quantizer alone takes about `seconds` (from `FEWEST_RANKING_SAMPLES` to `RANKING_SAMPLES`)."""
    data, reference = bench.evaluation, bench.reference
    listed = candidate.quantizers.listed(model, onnx_path)
    names = [name for name, _ in listed]
    run = candidate.quantizers.switchable(model, onnx_path, names)

    def on(count: int) -> Callable[[frozenset[str]], float]:
        inputs = {name: values[:count] for name, values in data.inputs.items()}
        expected = [r[:count] for r in reference]

        def error(reverted: frozenset[str]) -> float:
            mask = np.array([name in reverted for name in names], dtype=bool)
            return output_error(batched(lambda feeds: run(feeds, mask), bench.batch, bench.fixed, data.axes)(inputs),
                                expected)
        return error

    few = min(FEWEST_RANKING_SAMPLES, len(data))
    started = time.monotonic()
    on(few)(frozenset())
    per_sample = (time.monotonic() - started) / few
    count = int(np.clip(seconds / max(len(names), 1) / per_sample, few, min(RANKING_SAMPLES, len(data))))
    return QuantizerRanking(listed, on(count), count)


def output_error(outputs: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """Mean over outputs and samples of each sample's relative error (L2 against the reference's L2): 0 for the
    reference's own outputs."""
    errors = []
    for got, expected in zip(outputs, reference):
        got = np.asarray(got, np.float64).reshape(len(got), -1)
        expected = np.asarray(expected, np.float64).reshape(len(expected), -1)
        norms = np.maximum(np.linalg.norm(expected, axis=1), 1e-12)
        errors.append(float(np.mean(np.linalg.norm(got - expected, axis=1) / norms)))
    return float(np.mean(errors))


@dataclass
class Beat:
    """The fastest row already within the budget, which a trial that misses the budget must be faster than."""
    name: str
    p50_ms: float               # its row's p50
    artifact: Artifact
    threads: int

    @cached_property
    def runner(self) -> Runner:
        return open_artifact(self.artifact, self.threads)


class TrialTiming:
    """The search's decisions on speed, each from the builds timed together in alternating rounds (`Bench.together`,
    CHECK_SECONDS x --measure-seconds each), never from two numbers measured apart: whether a trial that misses the
    budget is still faster than `beat` (`not_faster`), and which trials within the budget are as fast as the fastest
    of them (`as_fast`). Each trial runs as its short timing found fastest (`Trial.timed_as`).
    Every contest is recorded in `contests`, for the report."""

    def __init__(self, candidate: Candidate, bench: Bench, runs_also_as: dict[str, dict], beat: Beat | None):
        self.candidate, self.bench, self.beat = candidate, bench, beat
        self.configs = runs_also_as
        self.artifacts: dict[int, Artifact] = {}          # by id() of the trial
        self.contests: list[dict] = []

    def add(self, trial: Trial, artifact: Artifact) -> None:
        self.artifacts[id(trial)] = artifact

    def runner(self, trial: Trial) -> Runner:
        artifact = self.artifacts[id(trial)]
        config = self.configs.get(trial.timed_as, artifact.runtime_config)
        return self.candidate.backend.open(replace(artifact, runtime_config=config), self.bench.threads)

    def together(self, runners: dict[str, Runner]) -> dict[str, dict]:
        return self.bench.together(runners, self.bench.measure.seconds * CHECK_SECONDS)

    def not_faster(self, trial: Trial) -> str | None:
        """Why `trial` cannot beat `beat` (None while it can): timed together, it is not `faster` than it. A trial
        whose short timing is already below the beat's p50 goes on untimed: going on is the safe side."""
        if self.beat is None or trial.p50_ms < self.beat.p50_ms:
            return None
        timed = self.together({"trial": self.runner(trial), self.beat.name: self.beat.runner})
        s = round_speedup(timed[self.beat.name], timed["trial"])
        self._record(trial, self.beat.name, s, timed["trial"], timed[self.beat.name])
        if faster(s):
            return None
        return (f"slower than {self.beat.name}: timed together, the trial runs at {s['ratio']:.2f}x its speed "
                f"({verdict_text(s)}; p50 {timed['trial']['p50_ms']:.3f} ms against "
                f"{timed[self.beat.name]['p50_ms']:.3f} ms)")

    def as_fast(self, trials: list[Trial]) -> list[Trial]:
        """Of `trials` (within the budget), those the fastest is not `faster` than, timed together; only those whose
        short timing is within paired_timing.CLOSE of the fastest take part (at most MOST_CONTENDERS)."""
        shortest = min(t.p50_ms for t in trials)
        close = sorted((t for t in trials if t.p50_ms <= shortest * CLOSE), key=lambda t: t.p50_ms)[:MOST_CONTENDERS]
        if len(close) == 1:
            return close
        names = {f"trial {i}: {t.purpose}": t for i, t in enumerate(close)}
        timed = self.together({name: self.runner(t) for name, t in names.items()})
        fastest, versus = versus_fastest(timed)
        for name, s in versus.items():
            self._record(names[fastest], names[name].purpose, s, timed[fastest], timed[name])
        return [names[fastest]] + [names[name] for name, s in versus.items() if not faster(s)]

    def _record(self, trial: Trial, versus: str, s: dict, trial_timed: dict, versus_timed: dict) -> None:
        """One contest: `trial`'s speed-up `s` over `versus`, each one's p50 in the rounds, and the verdict."""
        self.contests.append({"trial": trial.purpose, "versus": versus, "trial_p50_ms": trial_timed["p50_ms"],
                              "versus_p50_ms": versus_timed["p50_ms"], "ratio": s["ratio"], "ci95": s["ci95"],
                              "rounds": len(s["rounds"]), "faster": faster(s)})


@dataclass
class Tuned:
    result: SearchResult
    artifact: Artifact          # the best configuration's build
    metric: str                 # the quality metric on the tuning data
    builds: int                 # configurations built for the search (the reused full INT8 build not counted)
    # those whose build came from the cache (layers in float, calibration, quantizers reverted)
    restored: set[tuple[tuple[str, ...], str, tuple[str, ...]]]
    data: str                   # what each dataset was used for, in words
    timing: TrialTiming         # how its decisions on speed were timed (the best trial's build still open to it)


def tune(candidate: Candidate, bench: Bench, *, onnx_path: Path, work: Path, context: BuildContext,
         build: Callable[[Candidate, Path, BuildContext], tuple[Artifact, bool]], max_drop: float, seconds: float,
         step: Step, built: Artifact | None = None, beat: Beat | None = None,
         runs_also_as: dict[str, dict] | None = None, evaluation_drop: float | None = None) -> Tuned:
    """Search the alternative calibrations `candidate` offers (`Candidate.calibrations`), then quantizers to revert
    (`Candidate.quantizers`) or else layers to keep in float, until `candidate`'s quality drop on the tuning data
    is within budget.
    `bench` judges on the tuning data (`Bench.on`: the calibration data, or more with `tuning_data`) and times as the
    run does; `seconds` bounds the search.

    `built` is the candidate's fully quantized build, reused as the first trial; `beat` is the fastest row already
    within the budget (see `search`); decisions on speed time the builds together (`TrialTiming`). `build(candidate,
    folder, context)` makes each configuration: (artifact, whether it was restored from the cache). `runs_also_as`
    maps the candidates that run this one's model with another runtime config to that config: each trial is timed
    in those too. `evaluation_drop` is `built`'s drop on the evaluation data (by `bench.metric`): where the tuning
    data shows less, the search aims lower (`accuracy.aimed`).
    When the tuning data is too few samples to resolve `max_drop` (see `uncertainty.resolution`), the
    result's `resolution` says so; the search runs as it would otherwise.
    """
    tuning, metric = bench.evaluation, bench.metric
    layers = candidate.layers(onnx_path)
    # the alternative calibrations that differ from this run's (a recipe may already ask for percentile)
    calibrations = tuple(c.name for c in candidate.calibrations if c.applied(context.int8) != context.int8)
    artifacts: dict[tuple[tuple[str, ...], str, tuple[str, ...]], Artifact] = {}   # by Trial key
    timing = TrialTiming(candidate, bench, runs_also_as or {}, beat)
    builds, restored = [], set()                 # the configurations built, and those the cache gave

    def evaluate(excluded: tuple[str, ...], purpose: str, calibration: str, reverted: tuple[str, ...]) -> Trial:
        step.describe(f"{candidate.name}: accuracy budget, trial {len(artifacts) + 1} ({purpose})")
        settings = calibrated(context, candidate, calibration)
        settings = replace(settings, int8=replace(settings.int8, exclude=excluded, reverted=reverted))
        if built is not None and not excluded and not calibration and not reverted:
            artifact = built
        else:
            artifact, cached = build(candidate, work / f"trial-{len(artifacts):03d}", settings)
            builds.append((excluded, calibration, reverted))
            if cached:
                restored.add((excluded, calibration, reverted))
        runner = candidate.backend.open(artifact, bench.threads)
        quality, drop_se = judged(bench, bench.predict(runner))
        timed_as, p50 = fastest_config(candidate, artifact, runner, bench.sample, bench.threads, runs_also_as or {})
        artifacts[excluded, calibration, reverted] = artifact
        trial = Trial(excluded, quality, bench.reference_quality - quality, p50, artifact.size_bytes, purpose,
                      timed_as=timed_as, drop_se=drop_se, digest=sha256_folder(artifact.folder))
        timing.add(trial, artifact)
        return trial

    def local_errors(calibration: str) -> dict[str, float]:
        step.describe(f"{candidate.name}: accuracy budget, ranking {len(layers)} layers by local error")
        full = artifacts[(), calibration, ()]
        return candidate.local_errors(full.folder / full.entry, tuning, layers)

    def quantizers(calibration: str, seconds: float) -> QuantizerRanking:
        full = artifacts[(), calibration, ()]
        step.describe(f"{candidate.name}: accuracy budget, ranking the quantizers")
        return ranking(candidate, full.folder / full.entry, onnx_path, bench, seconds)

    result = search(layers, evaluate, max_drop, seconds,
                    local_errors=local_errors if candidate.local_errors is not None else None,
                    not_faster=timing.not_faster, as_fast=timing.as_fast, calibrations=calibrations,
                    quantizers=quantizers if candidate.quantizers is not None else None,
                    evaluation_drop=evaluation_drop if built is not None else None)
    result.contests = timing.contests
    result.resolution = resolution(len(tuning), metric, max_drop,
                                   "the calibration data" if tuning is context.calibration else "the tuning data")
    chosen = (result.best.excluded, result.best.calibration, result.best.reverted)
    best = artifacts[chosen]
    for key, artifact in artifacts.items():
        if key != chosen and artifact is not built:
            shutil.rmtree(artifact.folder, ignore_errors=True)
    roles = "calibration data: ranges, " if tuning is context.calibration else \
        f"calibration data: ranges; tuning data ({tuning.source}): "
    return Tuned(result, best, metric, len(builds), restored, f"{roles}sensitivity and the budget check during the "
                 "search; evaluation data: the final numbers in the candidate table", timing)
