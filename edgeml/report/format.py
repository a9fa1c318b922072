"""The text of the report's numbers: latencies, sizes, shares, quality drops and their intervals."""

from __future__ import annotations

from edgeml.measure.evaluate import CONTINUOUS

DASH = "—"                                        # a cell without a value


def ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def layer_ms(value: float) -> str:
    """Three significant digits: single layers of small models take microseconds."""
    return f"{value:.3g}"


def mb(value: int) -> str:
    return f"{value / 1e6:.2f}"


def percent(value: float) -> str:
    return f"{value * 100:.2f} %"


def quality(value: float, metric: str) -> str:
    return f"{value:.4f}" if metric in CONTINUOUS else percent(value)


def drop(value: float, metric: str) -> str:
    return f"{value:+.4f}" if metric in CONTINUOUS else f"{value * 100:+.2f} pt"


def interval(ci: list[float], metric: str) -> str:
    lo, hi = ci
    if metric in CONTINUOUS:
        return f"{lo:+.4f} to {hi:+.4f}"
    return f"{lo * 100:+.2f} to {hi * 100:+.2f} pt"


def p_value(p: float) -> str:
    return f"p = {p:.3g}" if p >= 0.001 else "p < 0.001"
