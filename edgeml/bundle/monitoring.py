"""The manifest's `monitoring` block: what the selected model's inputs and outputs looked like on the
evaluation data, so that `edgeml serve` can tell when live traffic stops looking like it (edgeml.serve.drift).

Each input and each output tensor is a feature group. A sample of any shape is reduced to a few scalars
(summaries) that a window of live samples can be compared on, whatever the tensor's layout:

- every tensor: the sample's mean and standard deviation over all its values (a change of brightness,
  scale, offset or contrast moves them; per-channel statistics would need to know the layout);
- class scores (a float output of shape [N, C], C >= 2): also the top-1 confidence (after a softmax,
  unless the rows already are probabilities) and the predicted class.

A continuous summary keeps 101 quantiles (levels 0, 0.01, ..., 1: the reference CDF of the KS test) and a
histogram on the reference's deciles (the bins of the PSI); the predicted class keeps the class frequencies.
Summaries are rounded to 6 significant digits, live ones as well (`summarize`), so that the bundle stays
byte for byte reproducible and both sides are compared on the same grid. The thresholds come from the
recipe's `drift:` section (DriftConfig) and are stored beside the statistics.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from edgeml.errors import EdgemlError

DIGITS = 6
QUANTILES = np.linspace(0, 1, 101)
DECILES = np.linspace(0.1, 0.9, 9)
CONTINUOUS = ("mean", "std", "confidence")
CATEGORICAL = ("class",)


@dataclass(frozen=True)
class DriftConfig:
    """The recipe's `drift:` section: when `edgeml serve` says a window of live traffic has drifted."""
    psi: float = 0.2            # population stability index above which a summary has moved materially
    pvalue: float = 0.01        # family-wise p-value of the KS (chi-square for the class) tests, Bonferroni-split
    window: int = 200           # the last live samples compared with the reference
    min_samples: int | None = None      # no verdict on fewer samples than this; None: half the window

    def __post_init__(self):
        if self.min_samples is None:
            object.__setattr__(self, "min_samples", self.window // 2 if isinstance(self.window, int) else None)
        for name in ("window", "min_samples"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int):
                raise EdgemlError(f"{name} must be a whole number of samples, got {getattr(self, name)!r}")
        if not (math.isfinite(self.psi) and self.psi > 0):
            raise EdgemlError(f"psi must be a positive number (e.g. 0.2), got {self.psi!r}")
        if not 0 < self.pvalue < 1:
            raise EdgemlError(f"pvalue must be between 0 and 1 (e.g. 0.01), got {self.pvalue!r}")
        if self.window < 10:
            raise EdgemlError(f"window must be at least 10 samples, got {self.window!r}")
        if not 1 <= self.min_samples <= self.window:
            raise EdgemlError(f"min_samples must be from 1 to window ({self.window}), got {self.min_samples!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Summaries:
    """One tensor's per-sample summaries: name -> one value per sample; `scores` says how class scores were
    read ("probabilities" or "logits"; None: not class scores), `classes` how many there are."""
    values: dict[str, np.ndarray]
    scores: str | None = None
    classes: int | None = None


def rounded(values: np.ndarray) -> np.ndarray:
    """`values` (float64) rounded to DIGITS significant digits: the doubles nearest those decimals."""
    values = np.asarray(values, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        exponent = np.where(values == 0, 0, DIGITS - 1 - np.floor(np.log10(np.abs(values))))
    exponent = np.nan_to_num(exponent, posinf=0, neginf=0)
    up = exponent >= 0                        # multiply by an exact power of ten, or divide by one
    scale = 10.0 ** np.abs(exponent)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(up, np.round(values * scale) / scale, np.round(values / scale) * scale)


def class_scores(array: np.ndarray) -> str | None:
    """"probabilities" or "logits" for a float [N, C] output with C >= 2 (class scores), else None."""
    if array.ndim != 2 or array.shape[1] < 2 or array.dtype.kind != "f" or not len(array):
        return None
    rows = array.astype(np.float64)
    probabilities = rows.min() >= 0 and rows.max() <= 1 and np.allclose(rows.sum(1), 1, atol=1e-3)
    return "probabilities" if probabilities else "logits"


def summarize(array: np.ndarray, scores: str | None = None) -> Summaries:
    """The per-sample summaries of one tensor (samples first), rounded as the manifest's are."""
    flat = np.asarray(array).reshape(len(array), -1).astype(np.float64)
    values = {"mean": flat.mean(1), "std": flat.std(1)} if flat.shape[1] else {}
    if scores is not None:
        top = flat.max(1)
        confidence = top if scores == "probabilities" else 1 / np.exp(flat - top[:, None]).sum(1)
        values |= {"confidence": confidence, "class": flat.argmax(1)}
    values = {k: v if k in CATEGORICAL else rounded(v) for k, v in values.items()}
    return Summaries(values, scores, flat.shape[1] if scores is not None else None)


def summarize_outputs(outputs: list[np.ndarray]) -> list[Summaries]:
    """The summaries of a model's outputs on the evaluation data, class scores found by their shape and values."""
    return [summarize(o, class_scores(o)) for o in outputs]


def bins(edges: list[float] | np.ndarray, values: np.ndarray) -> np.ndarray:
    """Counts of `values` in the bins (-inf, e1), [e1, e2), ..., [ek, inf): the histogram both sides use."""
    return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)


def monitoring_block(inputs: dict[str, np.ndarray], outputs: dict[str, Summaries], drift: DriftConfig) -> dict:
    """The manifest's `monitoring` block from the evaluation inputs and the selected artifact's output summaries.
    A summary with a value that is not finite (NaN, inf) has no usable reference and is left out."""
    groups = [("input", name, summarize(array)) for name, array in inputs.items()]
    groups += [("output", name, summaries) for name, summaries in outputs.items()]
    features = []
    for kind, name, summaries in groups:
        for summary, values in summaries.values.items():
            if summary in CATEGORICAL:
                counts = np.bincount(values, minlength=summaries.classes)
                features.append({"kind": kind, "name": name, "summary": summary,
                                 "frequencies": rounded(counts / len(values)).tolist()})
            elif np.isfinite(values).all():
                edges = np.unique(rounded(np.quantile(values, DECILES)))
                features.append({"kind": kind, "name": name, "summary": summary,
                                 "quantiles": rounded(np.quantile(values, QUANTILES)).tolist(),
                                 "edges": edges.tolist(),
                                 "frequencies": rounded(bins(edges, values) / len(values)).tolist()})
    return {
        "data": "the evaluation data (lineage.evaluation_data_sha256), through the artifact",
        "samples": len(next(iter(inputs.values()))),
        "drift": drift.to_dict(),
        "class_scores": {name: s.scores for name, s in outputs.items() if s.scores is not None},
        "features": features,
    }
