"""Quantization within an accuracy budget: other calibrations, per-layer sensitivity, then mixed precision.

A "layer" is any node the quantizer quantizes: the compute layers (Conv, Gemm, MatMul) and the
Add, Concat, Mul, activations, pooling, Resize ... between them (the backend lists them), so that
the loss can be found wherever it is, e.g. in a Concat of two branches with very different ranges.
Keeping every layer in float gives the float model.

When a fully quantized model loses more quality than allowed, each layer is quantized on its own
(all others in float) to measure how much quality that layer alone costs. The most sensitive
layers are then kept in float one at a time, most sensitive first, until the budget is met or the
time budget runs out. (Leaving one layer out instead misses pairs: a heavy-tailed activation is
quantized both as its producer's output and as its consumer's input.)

Models with many layers (more than `TRIALS_UP_TO`) would need one build per layer; when the
caller can measure each layer's local error in the fully quantized model in one pass, layers are
ranked by that instead, and the number of most sensitive layers kept in float is found by
doubling and then bisection (a few builds, not one per layer). Layers are not grouped (e.g. a
Conv with the Relu that only it feeds): the bisection's cost grows with the logarithm of the
count, the local error charges each Q/DQ to the node that asked for it (a Relu or MaxPool that
only follows its input's quantization costs nothing of its own and ranks last), and a group would
hide which op holds the loss.

Before any of that, one build keeps every layer in float (the float model, when the backend lists
every quantized op): when even that misses the budget, the loss is in something the search does not
control, no search can meet it, and it stops there.

Then, before any layer is kept in float, the fully quantized model is built with each alternative calibration the
quantizer offers (`calibrations`: averaged or percentile ranges, asymmetric activations, bias correction ...), in
order, until one is within the budget: a loss that is one bad range, or the sum of many small errors, is fixed by
other ranges or corrections, not by float layers. When none is, the one with the smallest drop (when smaller than
the default's) is the base of every later build (layers kept in float, the local-error ranking).

When the caller already has a faster configuration within the budget (another candidate), the
search stops at the first trial that misses the budget and is no faster than it (`not_faster`: the caller
times the two together, in alternating rounds; one short timing on a busy machine must not end a search):
keeping more layers in float only makes it slower.

The best configuration is the fastest within the budget, except that trial timings are short: those the
caller's `as_fast` finds as fast as the fastest (timed together) count as equally fast, and the one among
them that keeps the fewest layers in float wins (a tiny model kept all in float once "won" by noise).

The time budget is honoured by not starting a trial that would end past it: a trial is expected to take as
long as the longest trial before it (on a model whose one evaluation takes 40 s, "check between trials" let a
2.5-minute search run for 6).

Every configuration tried is kept, so the caller can show the Pareto set of latency against
quality. The algorithm is backend-free: `evaluate` builds and measures, on data the caller
chooses (edgeml.pipeline.tuning: enough samples to resolve the budget, never the evaluation data).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from edgeml.errors import first_line
from edgeml.pipeline.time_limit import TimeLimit

TRIALS_UP_TO = 16      # layer count up to which sensitivity is measured with one build per layer
TIMING_NOISE = 1.05    # without `as_fast`: trial p50s (short runs) within this ratio of the fastest count as equal


@dataclass
class Trial:
    """One configuration tried: which layers stayed in float, and what it measured."""
    excluded: tuple[str, ...]
    quality: float             # on the tuning data
    drop: float                # reference quality - quality
    p50_ms: float
    size_bytes: int
    purpose: str = ""          # all quantized | sensitivity: only X quantized | fallback step N
    pareto: bool = False
    timed_as: str = ""         # the runtime config that gave p50_ms, when the caller timed it in several
    calibration: str = ""      # the alternative calibration it was built with (its name); "" for the default


@dataclass
class SearchResult:
    best: Trial
    met: bool
    # budget met | time budget | out of reach: ... | slower than <candidate> ...
    stopped: str
    # layer, op, and drop_when_only_this_is_int8 (one build per layer) or local_error (one pass)
    sensitivity: list[dict] = field(default_factory=list)
    trials: list[Trial] = field(default_factory=list)
    seconds: float = 0.0
    # why the data the search judged on cannot resolve the budget (uncertainty.resolution); None: it can
    resolution: str | None = None
    # the caller's comparisons of builds timed together: trial, versus, speedup {ratio, ci95, rounds}, faster
    contests: list[dict] = field(default_factory=list)
    # the calibration the builds after the alternative calibrations' trials used; "" for the default
    calibration: str = ""
    # the alternative calibrations that failed to build or run: calibration, error (one line)
    failed: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"best": asdict(self.best), "met": self.met, "stopped": self.stopped,
                "sensitivity": self.sensitivity, "trials": [asdict(t) for t in self.trials],
                "seconds": round(self.seconds, 3), "resolution": self.resolution, "contests": self.contests,
                "calibration": self.calibration, "failed": self.failed}


def search(layers: list[tuple[str, str]], evaluate: Callable[[tuple[str, ...], str, str], Trial],
           max_drop: float, seconds: float, on_trial: Callable[[Trial], None] | None = None,
           local_errors: Callable[[str], dict[str, float]] | None = None,
           not_faster: Callable[[Trial], str | None] | None = None,
           as_fast: Callable[[list[Trial]], list[Trial]] | None = None,
           calibrations: tuple[str, ...] = ()) -> SearchResult:
    """Find the fastest configuration within `max_drop`, keeping as few layers in float as it can.

    `layers` are (node name, op type) in graph order; `evaluate(excluded, purpose, calibration)` builds the
    model with those layers in float, calibrated as `calibration` says (one of `calibrations`, the names of the
    quantizer's alternatives to its default, or "" for the default), and measures it. `seconds` bounds the whole
    search: no trial starts that the longest trial so far would carry past it. `local_errors(calibration)`, when
    given, measures each layer's error in the fully quantized model, for models with many layers.
    `not_faster(trial)`, asked of a trial that misses the budget, says why it is no faster than the fastest
    configuration the caller already has within the budget (None while it is faster); `as_fast(trials)`
    picks, of trials within the budget, those as fast as the fastest of them (see `best_trial`).
    """
    started = time.monotonic()
    trials: list[Trial] = []
    durations: list[float] = []
    base = ""                                   # the calibration every build after the calibrations' trials uses
    failed: list[dict] = []

    def trial(excluded: tuple[str, ...], purpose: str, calibration: str | None = None) -> Trial:
        begun = time.monotonic()
        calibration = base if calibration is None else calibration
        t = evaluate(excluded, purpose, calibration)
        t.calibration = calibration
        durations.append(time.monotonic() - begun)
        trials.append(t)
        if on_trial:
            on_trial(t)
        return t

    def out_of_time() -> bool:
        return time.monotonic() - started + max(durations, default=0.0) > seconds

    def hopeless(t: Trial) -> str | None:
        """Why to stop after `t`: it misses the budget and is already no faster than the caller's best."""
        return not_faster(t) if not_faster is not None and t.drop > max_drop else None

    def finish(stopped: str, sensitivity: list[dict]) -> SearchResult:
        mark_pareto(trials)
        best = best_trial(trials, max_drop, as_fast)
        return SearchResult(best, best.drop <= max_drop + 1e-12, stopped, sensitivity, trials,
                            time.monotonic() - started, calibration=base, failed=failed)

    full = trial((), "all layers quantized")
    if full.drop <= max_drop:
        return finish("budget met", [])

    if why := hopeless(full):
        return finish(why, [])
    names = tuple(name for name, _ in layers)
    if out_of_time():
        return finish("time budget", [])
    ceiling = trial(names, f"all {len(names)} layers in float")
    if ceiling.drop > max_drop:
        return finish(f"out of reach: with all {len(names)} layers in float the drop is still {ceiling.drop:.4f}", [])
    for calibration in calibrations:
        if out_of_time():
            return finish("time budget", [])
        try:
            if trial((), f"calibration: {calibration}", calibration).drop <= max_drop:
                return finish("budget met", [])
        except Exception as e:    # ranges the model's values break (a histogram over an infinite range): the next
            if isinstance(e, (TimeLimit, MemoryError)):
                raise
            failed.append({"calibration": calibration, "error": f"{type(e).__name__}: {first_line(e)}"})
    base = min((t for t in trials if not t.excluded), key=lambda t: t.drop).calibration   # equal drops: the default
    if local_errors is not None and len(layers) > TRIALS_UP_TO:
        return _bisect(layers, local_errors(base), trial, out_of_time, hopeless, finish, max_drop)

    sensitivity = []
    for name, op in layers:
        if out_of_time():
            break
        t = trial(tuple(n for n in names if n != name), f"sensitivity: only {name} quantized")
        sensitivity.append({"layer": name, "op": op, "drop_when_only_this_is_int8": t.drop})
    ranked = [s["layer"] for s in sorted(sensitivity, key=lambda s: -s["drop_when_only_this_is_int8"])]
    ranked += [name for name, _ in layers if name not in ranked]   # unmeasured ones last, in graph order

    excluded: tuple[str, ...] = ()
    for step, name in enumerate(ranked[:-1], 1):      # the last step is the all-in-float build, within budget
        if out_of_time():
            return finish("time budget", sensitivity)
        excluded += (name,)
        previous = next((t for t in trials if set(t.excluded) == set(excluded) and t.calibration == base), None)
        t = previous or trial(excluded, f"fallback step {step}: {len(excluded)} layer(s) in float")
        if t.drop <= max_drop:
            return finish("budget met", sensitivity)
        if why := hopeless(t):
            return finish(why, sensitivity)
    return finish("budget met", sensitivity)


def _bisect(layers, errors: dict[str, float], trial, out_of_time, hopeless, finish,
            max_drop: float) -> SearchResult:
    """Keep the k layers with the largest local error in float, for the smallest k that meets the budget
    (all of them do): k = 1, 2, 4, ... until one does, then bisection between the last two."""
    sensitivity = [{"layer": name, "op": op, "local_error": errors.get(name, 0.0)} for name, op in layers]
    ranked = [s["layer"] for s in sorted(sensitivity, key=lambda s: -s["local_error"])]

    def attempt(k: int):
        return trial(tuple(ranked[:k]), f"{k} layer(s) with the largest local error in float")

    failed, met, k = 0, len(ranked), 1
    while k < met:
        if out_of_time():
            return finish("time budget", sensitivity)
        t = attempt(k)
        if t.drop <= max_drop:
            met = k
        elif why := hopeless(t):
            return finish(why, sensitivity)
        else:
            failed, k = k, 2 * k
    while met - failed > 1:
        if out_of_time():
            return finish("time budget", sensitivity)
        middle = (failed + met) // 2
        if attempt(middle).drop <= max_drop:
            met = middle
        else:
            failed = middle
    return finish("budget met", sensitivity)


def best_trial(trials: list[Trial], max_drop: float,
               as_fast: Callable[[list[Trial]], list[Trial]] | None = None) -> Trial:
    """The trial to keep: among those within `max_drop`, the fewest layers in float of those as fast as the fastest,
    then the fastest; when none is within it, the smallest drop. `as_fast(within)` says which are as fast (the
    pipeline times them together); without it, a short-run p50 within `TIMING_NOISE` of the fastest is."""
    within = [t for t in trials if t.drop <= max_drop + 1e-12]
    if not within:
        return min(trials, key=lambda t: (t.drop, t.p50_ms))
    if as_fast is None or len(within) == 1:
        fastest = min(t.p50_ms for t in within)
        tied = [t for t in within if t.p50_ms <= fastest * TIMING_NOISE]
    else:
        tied = as_fast(within)
    return min(tied, key=lambda t: (len(t.excluded), t.p50_ms))


def mark_pareto(trials: list[Trial]) -> None:
    """A trial is on the Pareto front when no other is both faster and better (lower drop)."""
    for t in trials:
        t.pareto = not any(o is not t and o.p50_ms <= t.p50_ms and o.drop <= t.drop
                           and (o.p50_ms < t.p50_ms or o.drop < t.drop) for o in trials)
