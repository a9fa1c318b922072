"""Choosing the candidate to ship: the fastest within the quality budget, never nothing.

Measured and predicted latencies are never compared with each other: rows measured on this
machine are ranked by their measured p50; only when none of them is within the budget are
rows that run on the device alone ranked, by their predicted latency there.
"""

from __future__ import annotations

from edgeml.profiles import Profile
from edgeml.record import Row

JUDGED = ("ok", "predicted", "needs device")     # statuses whose quality was measured here


def select(rows: list[Row], max_drop: float, metric: str, profile: Profile | None = None) -> dict:
    """Mark the chosen row `selected` and return why it was chosen.

    The fastest built candidate whose quality drop is within `max_drop`; if none is, the one
    with the best quality, and the summary says the budget was not met.
    """
    candidates = [r for r in rows if r.role == "candidate" and r.status in JUDGED]
    for r in candidates:
        r.within_budget = r.quality_drop <= max_drop + 1e-12
    summary = {"max_accuracy_drop": max_drop, "metric": metric}
    on_device = [r for r in candidates if r.within_budget and r.status != "ok"]
    if chosen := fastest_measured(candidates, max_drop):
        basis = "measured"
        reason = f"the fastest candidate (p50 measured here) whose {metric} drop is within {max_drop:g}"
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


def fastest_measured(rows: list[Row], max_drop: float) -> Row | None:
    """The candidate measured here with the lowest p50 whose quality drop is within `max_drop`, if any."""
    within = [r for r in rows if r.role == "candidate" and r.status == "ok" and r.quality_drop <= max_drop + 1e-12]
    return min(within, key=lambda r: r.latency["p50_ms"], default=None)


def _predicted_ms(row: Row) -> float:
    """Predicted latency; rows without a prediction rank last."""
    ms = (row.predicted or {}).get("ms")
    return float("inf") if ms is None else ms
