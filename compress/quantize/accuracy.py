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
control, no search can meet it, and it stops there. A configuration with everything in float (every layer, or
every quantizer reverted) is never the result: it is the float model, which the original model already is.

Then, before anything is kept in float, the fully quantized model is built with each alternative calibration the
quantizer offers (`calibrations`: averaged or percentile ranges, asymmetric activations, bias correction ...), in
order, until one is within the budget: a loss that is one bad range, or the sum of many small errors, is fixed by
other ranges or corrections, not by float layers. When none is, the one with the smallest drop (when smaller than
the default's) is the base of every later build (layers kept in float, the local-error ranking).

Where the backend can list the quantizers of the fully quantized build and run it with any of them reverted
(`quantizers`: each activation's Q/DQ pair or FakeQuantize, each weight's), the search reverts quantizers instead of
keeping layers in float (`_revert_quantizers`): the error of an INT8 model arises in quantizers, not layers, and
often not in a compute layer at all (a model input, a Concat, Add, Mul or Sigmoid output, an embedding's output),
or it is the sum of many small ones; "drop when only this layer is INT8" then ranks nothing (1 to 32 layers of a
text recognizer in float: drop 0.060, 0.059, 0.057, 0.060, 0.058, 0.059). Each quantizer is ranked by the output
error its revert removes, measured in one run of a model with every quantizer switchable (no build); the greedy
reverts re-rank as they go, and a flat ranking is bisected.

When the caller already has a faster configuration within the budget (another candidate), the
search stops at the first trial that misses the budget and is no faster than it (`not_faster`: the caller
times the two together, in alternating rounds; one short timing on a busy machine must not end a search):
keeping more layers in float only makes it slower.

The best configuration is the fastest within the budget, except that trial timings are short: those the
caller's `as_fast` finds as fast as the fastest (timed together) count as equally fast, and the one among
them that keeps the fewest layers in float wins (a tiny model kept all in float once "won" by noise).

The budget is judged on the tuning data, never the evaluation data. When the fully quantized build broke the
budget on the evaluation data but drops less on the tuning data (`evaluation_drop`), the tuning data understates
the loss, and the search aims as much lower there (`aimed`): a text recognizer's INT8 build dropped 0.0071 on 64
calibration lines, within a 0.01 budget (the search stopped at once, "no change"), and 0.0103 on 200 evaluation
lines. And a trial is within the budget only when its drop plus `MARGIN_SE` standard errors of it (over the tuning
samples: `Trial.drop_se`) is: the search stops at the first configuration whose drop on the tuning data happens to
meet the budget, which makes that drop an optimistic estimate (a text detector's mixed build: 0.0089 on 64 tuning
pages, 0.0118 and 0.0120 on 200 evaluation pages in two runs).

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
from functools import partial

from edgeml.errors import first_line
from edgeml.time_limit import TimeLimit

TRIALS_UP_TO = 16      # layer count up to which sensitivity is measured with one build per layer
RANKING_SHARE = 0.4    # of the time left, at most this share ranks the quantizers (one run each, no build)
FLAT = 0.2             # the best quantizer to revert removes less than this share of the output error: it is spread
RERANK = 8             # after each revert, at least the next this many of the ranking are ranked again
AIM_FLOOR = 0.25      # the search never aims below this share of the budget on the tuning data
MARGIN_SE = 1.0       # a trial is within the budget when its drop plus this many standard errors of it is
TIMING_NOISE = 1.05    # without `as_fast`: trial p50s (short runs) within this ratio of the fastest count as equal


@dataclass
class Trial:
    """One configuration tried: which layers stayed in float (or quantizers were reverted), and what it measured."""
    excluded: tuple[str, ...]
    quality: float             # on the tuning data
    drop: float                # reference quality - quality
    p50_ms: float
    size_bytes: int
    purpose: str = ""          # all quantized | sensitivity: only X quantized | fallback step N
    pareto: bool = False
    timed_as: str = ""         # the runtime config that gave p50_ms, when the caller timed it in several
    calibration: str = ""      # the alternative calibration it was built with (its name); "" for the default
    reverted: tuple[str, ...] = ()   # the quantizers of the fully quantized build reverted to float
    drop_se: float = 0.0       # the standard error of `drop` over the tuning samples (0: not measured)
    digest: str = ""           # the build's content hash, when the caller gives it: equal digests, the same model

    def within(self, max_drop: float) -> bool:
        """Whether the drop is within `max_drop` with its noise on the tuning data: drop + MARGIN_SE standard errors."""
        return self.drop + MARGIN_SE * self.drop_se <= max_drop + 1e-12


@dataclass
class QuantizerRanking:
    """The quantizers of the fully quantized build (the caller's backend lists them) and how far the build's outputs
    are from the reference's with some of them reverted to float, on the ranking data: one run, no build."""
    listed: list[tuple[str, str]]                 # (quantizer, what it quantizes), in graph order
    error: Callable[[frozenset[str]], float]      # output error with these reverted; 0 is the reference's outputs
    samples: int = 0                              # how many samples `error` runs


@dataclass
class SearchResult:
    best: Trial
    met: bool
    # budget met | time budget | out of reach: ... | slower than <candidate> ...
    stopped: str
    # layer, op, and drop_when_only_this_is_int8 (one build per layer) or local_error (one pass); or quantizer,
    # what, output_error (reverted alone) and gain (the output error it removes)
    sensitivity: list[dict] = field(default_factory=list)
    trials: list[Trial] = field(default_factory=list)
    seconds: float = 0.0
    # why the data the search judged on cannot resolve the budget (uncertainty.resolution); None: it can
    resolution: str | None = None
    # the caller's comparisons of builds timed together: trial, versus, speedup {ratio, ci95, rounds}, faster
    contests: list[dict] = field(default_factory=list)
    # the calibration the builds after the alternative calibrations' trials used; "" for the default
    calibration: str = ""
    # the alternative calibrations that failed to build or run: calibration (or step), error (one line)
    failed: list[dict] = field(default_factory=list)
    # the quantizers' ranking: quantizers (listed), ranked (alone), samples, output_error (all quantized); or None
    ranking: dict | None = None
    # the budget it aimed at on the tuning data, when lower than the budget (`aimed`); `met` is against it
    aim: float | None = None

    def to_dict(self) -> dict:
        return {"best": asdict(self.best), "met": self.met, "stopped": self.stopped,
                "sensitivity": self.sensitivity, "trials": [asdict(t) for t in self.trials],
                "seconds": round(self.seconds, 3), "resolution": self.resolution, "contests": self.contests,
                "calibration": self.calibration, "failed": self.failed, "ranking": self.ranking, "aim": self.aim}


def search(layers: list[tuple[str, str]], evaluate: Callable[[tuple[str, ...], str, str], Trial],
           max_drop: float, seconds: float, on_trial: Callable[[Trial], None] | None = None,
           local_errors: Callable[[str], dict[str, float]] | None = None,
           not_faster: Callable[[Trial], str | None] | None = None,
           as_fast: Callable[[list[Trial]], list[Trial]] | None = None,
           calibrations: tuple[str, ...] = (),
           quantizers: Callable[[str, float], QuantizerRanking] | None = None,
           evaluation_drop: float | None = None) -> SearchResult:
    """Find the fastest configuration within `max_drop`, keeping as few layers in float as it can.

    `layers` are (node name, op type) in graph order; `evaluate(excluded, purpose, calibration)` builds the
    model with those layers in float, calibrated as `calibration` says (one of `calibrations`, the names of the
    quantizer's alternatives to its default, or "" for the default), and measures it. `seconds` bounds the whole
    search: no trial starts that the longest trial so far would carry past it. `local_errors(calibration)`, when
    given, measures each layer's error in the fully quantized model, for models with many layers.
    `not_faster(trial)`, asked of a trial that misses the budget, says why it is no faster than the fastest
    configuration the caller already has within the budget (None while it is faster); `as_fast(trials)`
    picks, of trials within the budget, those as fast as the fastest of them (see `best_trial`).
    `quantizers(calibration, seconds)`, when given, ranks the quantizers of the fully quantized build made with that
    calibration, on as many samples as ranking each alone takes about `seconds`, and the search reverts quantizers
    (`evaluate`'s fourth argument) instead of keeping layers in float. `evaluation_drop`, the fully quantized
    build's drop on the evaluation data, lowers the budget on the tuning data where that data understates it
    (`aimed`).
    """
    started = time.monotonic()
    trials: list[Trial] = []
    durations: list[float] = []
    base = ""                                   # the calibration every build after the calibrations' trials uses
    failed: list[dict] = []

    def trial(excluded: tuple[str, ...], purpose: str, calibration: str | None = None,
              reverted: tuple[str, ...] = ()) -> Trial:
        begun = time.monotonic()
        calibration = base if calibration is None else calibration
        t = evaluate(excluded, purpose, calibration, reverted)
        t.calibration, t.reverted = calibration, reverted
        durations.append(time.monotonic() - begun)
        trials.append(t)
        if on_trial:
            on_trial(t)
        return t

    def out_of_time() -> bool:
        return time.monotonic() - started + max(durations, default=0.0) > seconds

    def hopeless(t: Trial) -> str | None:
        """Why to stop after `t`: it misses the budget and is already no faster than the caller's best."""
        return not_faster(t) if not_faster is not None and not t.within(max_drop) else None

    names = tuple(name for name, _ in layers)

    def float_model(t: Trial, ranking: dict | None, float_digests: set[str]) -> bool:
        """Whether `t` keeps everything in float: every layer, every quantizer reverted, or a build the same as
        the all-in-float one, whose digest is in `float_digests` (the only layer it quantizes is one the backend
        quantizes only beside others: a Relu)."""
        every_layer = bool(names) and set(t.excluded) >= set(names)
        return every_layer or ranking is not None and len(t.reverted) >= ranking["quantizers"] or \
            t.digest in float_digests

    def finish(stopped: str, sensitivity: list[dict], ranking: dict | None = None) -> SearchResult:
        mark_pareto(trials)
        # everything in float is the float model, which the original (or an fp32 candidate) already is
        floats = {t.digest for t in trials if t.digest and set(t.excluded) >= set(names)}
        best = best_trial([t for t in trials if not float_model(t, ranking, floats)] or trials, max_drop, as_fast)
        return SearchResult(best, best.within(max_drop), stopped, sensitivity, trials,
                            time.monotonic() - started, calibration=base, failed=failed, ranking=ranking, aim=aim)

    full = trial((), "all layers quantized")
    budget, max_drop = max_drop, aimed(max_drop, full.drop, evaluation_drop)
    aim = max_drop if max_drop < budget else None
    if full.within(max_drop):
        return finish("budget met", [])

    if why := hopeless(full):
        return finish(why, [])
    if out_of_time():
        return finish("time budget", [])
    ceiling = trial(names, f"all {len(names)} layers in float")
    if not ceiling.within(max_drop):
        return finish(f"out of reach: with all {len(names)} layers in float the drop is still {ceiling.drop:.4f}", [])
    for calibration in calibrations:
        if out_of_time():
            return finish("time budget", [])
        try:
            if trial((), f"calibration: {calibration}", calibration).within(max_drop):
                return finish("budget met", [])
        except Exception as e:    # ranges the model's values break (a histogram over an infinite range): the next
            if isinstance(e, (TimeLimit, MemoryError)):
                raise
            failed.append({"calibration": calibration, "error": f"{type(e).__name__}: {first_line(e)}"})
    base = min((t for t in trials if not t.excluded), key=lambda t: t.drop).calibration   # equal drops: the default
    if quantizers is not None:
        try:
            ranking = quantizers(base, RANKING_SHARE * (seconds - (time.monotonic() - started)))
        except Exception as e:    # a graph the backend cannot switch: layers, as for a backend without quantizers
            if isinstance(e, (TimeLimit, MemoryError)):
                raise
            failed.append({"step": "ranking the quantizers", "error": f"{type(e).__name__}: {first_line(e)}"})
        else:
            if ranking.listed:
                return _revert_quantizers(ranking, trial, out_of_time, hopeless, finish, max_drop,
                                          seconds - (time.monotonic() - started))
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
        if t.within(max_drop):
            return finish("budget met", sensitivity)
        if why := hopeless(t):
            return finish(why, sensitivity)
    return finish("budget met", sensitivity)


def aimed(max_drop: float, tuning_drop: float, evaluation_drop: float | None) -> float:
    """The budget on the tuning data: `max_drop`, lowered by the ratio of the fully quantized build's drop on the
    tuning data (`tuning_drop`) to its drop on the evaluation data, where that broke the budget by more; never
    below `AIM_FLOOR` of `max_drop` (a tuning drop of 0 says only that the tuning data cannot see the loss)."""
    if evaluation_drop is None or evaluation_drop <= max_drop or tuning_drop >= evaluation_drop:
        return max_drop
    return max_drop * max(AIM_FLOOR, tuning_drop / evaluation_drop)


def _bisect(layers, errors: dict[str, float], trial, out_of_time, hopeless, finish,
            max_drop: float) -> SearchResult:
    """Keep the k layers with the largest local error in float, for the smallest k that meets the budget
    (all of them do): k = 1, 2, 4, ... until one does, then bisection between the last two."""
    sensitivity = [{"layer": name, "op": op, "local_error": errors.get(name, 0.0)} for name, op in layers]
    ranked = [s["layer"] for s in sorted(sensitivity, key=lambda s: -s["local_error"])]

    def attempt(k: int):
        return trial(tuple(ranked[:k]), f"{k} layer(s) with the largest local error in float")
    return _fewest(len(ranked), attempt, out_of_time, hopeless, finish, max_drop, sensitivity)


def _fewest(count: int, attempt, out_of_time, hopeless, finish, max_drop: float, sensitivity: list[dict],
            whole: str | None = None) -> SearchResult:
    """The smallest k in 1..`count` whose `attempt(k)` meets the budget: k = 1, 2, 4 ..., then bisection between
    the last two. All `count` are known to meet it (not tried) unless `whole` says what they are ("all 12
    quantizers reverted"): then the last doubling tries them."""
    failed, met, k = 0, None if whole else count, 1
    while met is None or k < met:
        if out_of_time():
            return finish("time budget", sensitivity)
        k = min(k, count)
        t = attempt(k)
        if t.within(max_drop):
            met = k
        elif why := hopeless(t):
            return finish(why, sensitivity)
        elif k == count:
            return finish(f"out of reach: with {whole} the drop is still {t.drop:.4f}", sensitivity)
        else:
            failed, k = k, 2 * k
    while met - failed > 1:
        if out_of_time():
            return finish("time budget", sensitivity)
        middle = (failed + met) // 2
        if attempt(middle).within(max_drop):
            met = middle
        else:
            failed = middle
    return finish("budget met", sensitivity)


def _revert_quantizers(ranking: QuantizerRanking, trial, out_of_time, hopeless, finish, max_drop: float,
                       seconds: float) -> SearchResult:
    """Revert quantizers of the fully quantized build to float, the one whose revert removes the most output error
    first, until the budget is met.

    Each quantizer is ranked by the output error it removes when reverted alone (`RANKING_SHARE` of the time left
    at most; the rest follow in graph order); after each revert the rest are ranked again with it (only the next
    `RERANK` once the ranking would take more than its share of the time), since errors interact: a range that one
    quantizer crushed hides the error of the next, and a quantizer downstream of a reverted one may matter less.
    When the best one left removes less than `FLAT` of the remaining error, the error is the sum of many small
    ones: the top 1, 2, 4 ... of the ranking are reverted together until the budget is met, then bisection between
    the last two.
    """
    started = time.monotonic()
    what = dict(ranking.listed)
    errors: dict[frozenset[str], float] = {}

    spent = 0.0                                    # seconds in ranking runs

    def error(reverted) -> float:
        nonlocal spent
        key = frozenset(reverted)
        if key not in errors:
            begun = time.monotonic()
            errors[key] = ranking.error(key)
            spent += time.monotonic() - begun
        return errors[key]

    current = error(())
    gains: dict[str, float] = {}
    for name, _ in ranking.listed:
        if time.monotonic() - started > RANKING_SHARE * seconds:
            break
        gains[name] = current - error({name})
    sensitivity = [{"quantizer": name, "what": what[name], "output_error": errors[frozenset({name})],
                    "gain": gain} for name, gain in gains.items()]
    done = partial(finish, ranking={"quantizers": len(ranking.listed), "ranked": len(gains),
                                    "samples": ranking.samples, "output_error": errors[frozenset()]})
    order = sorted(gains, key=lambda name: -gains[name]) + [name for name, _ in ranking.listed if name not in gains]
    reverted: tuple[str, ...] = ()
    while order:
        if out_of_time():
            return done("time budget", sensitivity)
        if gains.get(order[0], 0.0) < FLAT * current:
            return _revert_groups(reverted, order, trial, out_of_time, hopeless, done, max_drop, sensitivity)
        reverted, order = reverted + (order[0],), order[1:]
        t = trial((), f"quantizers: {len(reverted)} reverted, the last: {what[reverted[-1]]}",
                  reverted=reverted)
        if t.within(max_drop):
            return done("budget met", sensitivity)
        if why := hopeless(t):
            return done(why, sensitivity)
        current = error(reverted)
        # all the rest ranked again while the ranking keeps to its share of the time, else the next RERANK
        one = spent / len(errors)
        again = order if spent + len(order) * one <= RANKING_SHARE * seconds else order[:RERANK]
        for name in again:
            gains[name] = current - error({*reverted, name})
        order = sorted(again, key=lambda name: -gains[name]) + order[len(again):]
    return done(f"out of reach: with all {len(reverted)} quantizers reverted the drop is still {t.drop:.4f}",
                sensitivity)


def _revert_groups(reverted: tuple[str, ...], order: list[str], trial, out_of_time, hopeless, finish,
                   max_drop: float, sensitivity: list[dict]) -> SearchResult:
    """Revert `reverted` and the first k of `order`, for the smallest k that meets the budget: k = 1, 2, 4 ... (the
    last step all of them), then bisection between the last two."""
    def attempt(k: int):
        return trial((), f"quantizers: {len(reverted) + k} reverted, {k} with the largest effect on the outputs "
                         f"together", reverted=reverted + tuple(order[:k]))

    return _fewest(len(order), attempt, out_of_time, hopeless, finish, max_drop, sensitivity,
                   whole=f"all {len(reverted) + len(order)} quantizers reverted")


def best_trial(trials: list[Trial], max_drop: float,
               as_fast: Callable[[list[Trial]], list[Trial]] | None = None) -> Trial:
    """The trial to keep: among those within `max_drop`, the fewest layers (or quantizers) in float of those as fast
    as the fastest,
    then the fastest; when none is within it, the smallest drop. `as_fast(within)` says which are as fast (the
    pipeline times them together); without it, a short-run p50 within `TIMING_NOISE` of the fastest is."""
    within = [t for t in trials if t.within(max_drop)]
    if not within:
        return min(trials, key=lambda t: (t.drop, t.p50_ms))
    if as_fast is None or len(within) == 1:
        fastest = min(t.p50_ms for t in within)
        tied = [t for t in within if t.p50_ms <= fastest * TIMING_NOISE]
    else:
        tied = as_fast(within)
    return min(tied, key=lambda t: (len(t.excluded) + len(t.reverted), t.p50_ms))


def mark_pareto(trials: list[Trial]) -> None:
    """A trial is on the Pareto front when no other is both faster and better (lower drop)."""
    for t in trials:
        t.pareto = not any(o is not t and o.p50_ms <= t.p50_ms and o.drop <= t.drop
                           and (o.p50_ms < t.p50_ms or o.drop < t.drop) for o in trials)
