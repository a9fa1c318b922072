"""Choosing the candidate to ship: the fastest within the quality budget, never nothing, and never a pick
that the noise of a shared machine made.

Measured and predicted latencies are never compared with each other: rows measured on this
machine are ranked by their measured p50; only when none of them is within the budget are
rows that run on the device alone ranked, by their predicted latency there.

One measurement per row cannot tell a 3% difference from noise. So the rows within the budget whose
p50 is within `CLOSE` of the fastest are timed again together, in alternating rounds (edgeml.measure.paired_timing),
and one counts as faster than another when the lower end of its speed-up's 95% CI is above `FASTER`, or when
its median speed-up is above `CLEARLY_FASTER`: rounds too noisy to prove a 10% gain must not hand the pick
to a slower row. The speed-up is the median of the rounds' own ratios (each round times the rows back to back, so
the load of a shared machine, which changes between rounds, cancels out), its CI a bootstrap over rounds.
Rows that are not faster than each other are tied, and the tie goes to the higher quality (a difference under
`QUALITY_RESOLUTION` of the budget is none: a cosine 0.99512 against 0.99510 is not a better model), then the
simpler precision (fp32, then fp16/bf16, then int8, then int4), then the original model (for an ONNX input it is
a candidate in its own right, its bytes unchanged), then the lower p50 of the alternating rounds (an INT8 model
whose float remainder runs in bf16 against the same model in fp32: nothing else tells them apart), then the
smaller file.
"""

from __future__ import annotations

from collections.abc import Callable

from edgeml.measure.paired_timing import (
    CLEARLY_FASTER,
    CLOSE,
    FASTER,
    MOST_CONTENDERS,
    faster,
    verdict_text,
    versus_fastest,
)
from edgeml.profiles import Profile
from edgeml.report.record import Row

JUDGED = ("ok", "predicted", "needs device")     # statuses whose quality was measured here
PRECISION_ORDER = {"fp32": 0, "fp16": 1, "bf16": 1, "int8": 2, "int4": 3}
QUALITY_RESOLUTION = 0.01   # quality differences under this fraction of the budget do not order tied rows


def select(rows: list[Row], max_drop: float, metric: str, profile: Profile | None = None, *,
           original_eligible: bool = False, paired: dict | None = None) -> dict:
    """Mark the chosen row `selected` and return why it was chosen.

    The fastest built candidate whose quality drop is within `max_drop` (with `original_eligible`, the
    original model counts as one); among the close contenders timed again in `paired` ({row name:
    edgeml.measure.paired_timing.summarize(...)}), the preferred row of those tied with the fastest. If none is
    within the budget, the one with the best quality, and the summary says the budget was not met.
    """
    candidates = [r for r in rows if r.role == "candidate" and r.status in JUDGED]
    for r in candidates:
        r.within_budget = r.quality_drop <= max_drop + 1e-12
    summary = {"max_accuracy_drop": max_drop, "metric": metric, "paired": None}
    on_device = [r for r in candidates if r.within_budget and r.status != "ok"]
    if chosen := fastest_measured(rows, max_drop, original_eligible=original_eligible):
        basis = "measured"
        reason = f"the fastest candidate (p50 measured here) whose {metric} drop is within {max_drop:g}"
        if paired:
            chosen, summary["paired"], reason = _settle(rows, paired, metric, max_drop)
        if chosen.role == "reference":
            reason = f"no candidate was faster than your model: the bundle ships it unchanged ({reason})"
    elif on_device:
        chosen = min(on_device, key=_predicted_ms)
        basis = "predicted"
        where = profile.display_name if profile is not None else "the device"
        reason = (f"the fastest candidate (p50 predicted for {where}; none could be measured here) whose "
                  f"{metric} drop is within {max_drop:g}")
    elif candidates:
        chosen = max(candidates, key=lambda r: (r.metrics[metric], r.status == "ok",
                                                -(r.latency or {}).get("p50_ms", float("inf"))))
        basis = "quality"
        reason = (f"no candidate kept its {metric} drop within {max_drop:g}; kept the most "
                  f"accurate one ({chosen.name}, drop {chosen.quality_drop:.4f})")
    else:
        return {**summary, "candidate": None, "within_budget": False, "basis": None,
                "reason": "no candidate was built"}
    chosen.selected = True
    return {**summary, "candidate": chosen.name, "within_budget": basis != "quality", "basis": basis,
            "reason": reason}


def measured_within(rows: list[Row], max_drop: float, *, original_eligible: bool = False) -> list[Row]:
    """The rows measured here whose quality drop is within `max_drop`: candidates, and the original model
    when it is eligible (an ONNX input, shipped as it is)."""
    return [r for r in rows if r.latency is not None and r.quality_drop is not None
            and (r.role == "candidate" and r.status == "ok" or r.role == "reference" and original_eligible)
            and r.quality_drop <= max_drop + 1e-12]


def fastest_measured(rows: list[Row], max_drop: float, *, original_eligible: bool = False) -> Row | None:
    """The row measured here with the lowest p50 whose quality drop is within `max_drop`, if any."""
    return min(measured_within(rows, max_drop, original_eligible=original_eligible),
               key=lambda r: r.latency["p50_ms"], default=None)


def contenders(rows: list[Row], max_drop: float, *, original_eligible: bool = False) -> list[Row]:
    """The rows within the budget whose p50 is within CLOSE of the fastest: the ones one measurement cannot
    order. At most MOST_CONTENDERS, the fastest first; the original model is kept among them when it is close."""
    within = sorted(measured_within(rows, max_drop, original_eligible=original_eligible),
                    key=lambda r: r.latency["p50_ms"])
    if not within:
        return []
    close = [r for r in within if r.latency["p50_ms"] <= within[0].latency["p50_ms"] * CLOSE]
    chosen = close[:MOST_CONTENDERS]
    original = next((r for r in close if r.role == "reference"), None)
    if original is not None and original not in chosen:
        chosen[-1] = original
    return chosen


def preference(rows: list[Row], metric: str, max_drop: float, paired: dict) -> Callable[[Row], tuple]:
    """Sort key among the tied `rows`: higher quality (to QUALITY_RESOLUTION of `max_drop`), simpler precision, the
    original, lower p50 in `paired`, smaller file, the name."""
    best = max(r.metrics[metric] for r in rows)

    def key(row: Row) -> tuple:
        quality = row.metrics[metric]
        return (0.0 if quality >= best - QUALITY_RESOLUTION * max_drop else best - quality, _precision(row),
                row.role != "reference", paired[row.name]["p50_ms"], row.size_bytes or 0, row.name)
    return key


def _precision(row: Row) -> int:
    return max(PRECISION_ORDER.get(part, len(PRECISION_ORDER)) for part in row.precision.split("+"))


def _settle(rows: list[Row], paired: dict, metric: str, max_drop: float) -> tuple[Row, dict, str]:
    """The pick among the contenders timed in alternating rounds: the preferred row among those the fastest
    is not FASTER than; the record of the comparison; the reason."""
    by_name = {r.name: r for r in rows if r.name in paired}
    fastest, versus = versus_fastest(paired)
    tied = [fastest] + [name for name, s in versus.items() if not faster(s)]
    prefer = preference([by_name[name] for name in tied], metric, max_drop, paired)
    chosen = min((by_name[name] for name in tied), key=prefer)
    record = {
        "rounds": len(paired[fastest]["round_p50_ms"]), "faster_above": FASTER, "clearly_faster_above": CLEARLY_FASTER,
        "fastest": fastest,
        "tied": sorted(tied, key=lambda name: prefer(by_name[name])),
        "rows": {name: {"p50_ms": s["p50_ms"], "p50_ci95_ms": s["p50_ci95_ms"], "round_p50_ms": s["round_p50_ms"],
                        "speedup_of_fastest": None if name == fastest else
                        {"ratio": versus[name]["ratio"], "ci95": versus[name]["ci95"], "faster": faster(versus[name])}}
                 for name, s in paired.items()},
    }
    within = f"its {metric} drop is within {max_drop:g}"
    if chosen.name == fastest:
        against = "; ".join((f"{_tie(s)} with {name} ({verdict_text(s)}), and preferred" if name in tied
                             else f"faster than {name} ({verdict_text(s)})") for name, s in versus.items())
        reason = (f"the fastest of the close contenders timed again in {record['rounds']} alternating rounds, "
                  f"and {within}: {against}")
        return chosen, record, reason
    s = versus[chosen.name]
    why = "it has the higher quality" if prefer(chosen)[0] < prefer(by_name[fastest])[0] else \
        "its precision is simpler" if _precision(chosen) < _precision(by_name[fastest]) else "it is the original model"
    reason = (f"{chosen.name} and {fastest} are {_tie(s)} (speed-up of {fastest} {s['ratio']:.2f}x, 95% CI "
              f"{s['ci95'][0]:.2f}–{s['ci95'][1]:.2f}, {record['rounds']} alternating rounds); the tie goes to "
              f"{chosen.name}: {why}; {within}")
    return chosen, record, reason


def _tie(s: dict) -> str:
    return "tied within noise" if s["ci95"][0] <= 1.0 else f"tied (a speed-up not above {FASTER:.2f}x does not count)"


def _predicted_ms(row: Row) -> float:
    """Predicted latency; rows without a prediction rank last."""
    ms = (row.predicted or {}).get("ms")
    return float("inf") if ms is None else ms
