"""Choosing the candidate to ship: the fastest within the quality budget, never nothing."""

from __future__ import annotations

from edgeml.record import Row


def select(rows: list[Row], max_drop: float, metric: str) -> dict:
    """Mark the chosen row `selected` and return why it was chosen.

    The fastest (p50) built candidate whose quality drop is within `max_drop`; if none is, the
    one with the best quality, and the summary says the budget was not met.
    """
    candidates = [r for r in rows if r.role == "candidate" and r.status == "ok"]
    for r in candidates:
        r.within_budget = r.quality_drop <= max_drop + 1e-12
    within = [r for r in candidates if r.within_budget]
    summary = {"max_accuracy_drop": max_drop, "metric": metric}
    if within:
        chosen = min(within, key=lambda r: r.latency["p50_ms"])
        reason = f"the fastest candidate (p50) whose {metric} drop is within {max_drop:g}"
    elif candidates:
        chosen = max(candidates, key=lambda r: (r.metrics[metric], -r.latency["p50_ms"]))
        reason = (f"no candidate kept its {metric} drop within {max_drop:g}; kept the most "
                  f"accurate one ({chosen.name}, drop {chosen.quality_drop:.4f})")
    else:
        return {**summary, "candidate": None, "within_budget": False, "reason": "no candidate was built"}
    chosen.selected = True
    return {**summary, "candidate": chosen.name, "within_budget": bool(within), "reason": reason}
