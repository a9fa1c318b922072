"""Drift: does the live traffic of `edgeml serve` still look like the evaluation data the bundle was built on?

The manifest's `monitoring` block (edgeml.bundle.monitoring) holds, per summary of each input and output
(a sample's mean, std; for class scores the top-1 confidence and the predicted class), the reference
quantiles and histogram. The detector keeps the summaries of the last `window` live samples and, once it
has `min_samples`, scores each summary two ways:

- PSI, the population stability index, over the reference's histogram bins (add-one-half smoothing, so
  that an empty bin in a small window does not explode the score): how much the distribution moved;
- a p-value: the two-sample Kolmogorov-Smirnov test (scipy.stats.ks_2samp) of the window against a
  sample drawn from the reference quantiles, as many values as the reference had (at most 1000), so that
  ties and the reference's own sampling error are accounted for; the predicted class, a category, gets a
  chi-square test of the window's class counts against the reference's (scipy.stats.chi2_contingency).

A summary drifts when its PSI is above the `psi` threshold AND its p-value is below `pvalue` divided by
the number of summaries (Bonferroni): PSI alone is noisy on a window of a few hundred samples, and a
p-value alone flags shifts too small to matter once windows are large; with both, in-distribution traffic
rarely alarms. The bundle drifts while any summary does; the verdict is renewed every window/10 samples
and whenever /health or /metrics is read, and clears once the window is back within the thresholds.

scipy does the tests: it is small, already installed with scikit-learn, and the two tests are one call
each. Evidently or alibi-detect would bring dashboards, pandas and (alibi-detect) TensorFlow or PyTorch
backends onto a device that needs none of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

from edgeml.bundle.monitoring import CATEGORICAL, QUANTILES, Summaries, bins, summarize

REFERENCE_CAP = 1000        # values drawn from the reference quantiles for the KS test, at most
HALF = 0.5                  # the smoothing added to each bin's count before the PSI


@dataclass(frozen=True)
class Score:
    kind: str               # input | output
    name: str               # the tensor's name
    summary: str            # mean | std | confidence | class
    psi: float
    pvalue: float
    drifting: bool


class _Feature:
    """One summary of one tensor, as the manifest describes it, and how a window is scored against it."""

    def __init__(self, spec: dict, samples: int):
        self.kind, self.name, self.summary = spec["kind"], spec["name"], spec["summary"]
        self.categorical = self.summary in CATEGORICAL
        self.edges = None if self.categorical else np.asarray(spec["edges"], np.float64)
        frequencies = np.asarray(spec["frequencies"], np.float64)
        self.reference_counts = frequencies * samples
        self.reference = _smoothed(self.reference_counts)
        if not self.categorical:
            drawn = min(samples, REFERENCE_CAP)
            self.sample = np.interp((np.arange(drawn) + 0.5) / drawn, QUANTILES, spec["quantiles"])

    def counts(self, values: np.ndarray) -> np.ndarray:
        if self.categorical:
            return np.bincount(values.astype(np.int64), minlength=len(self.reference))[:len(self.reference)]
        return bins(self.edges, values)

    def score(self, values: np.ndarray) -> tuple[float, float]:
        """(PSI, p-value) of a window's values."""
        counts = self.counts(values)
        live = _smoothed(counts)
        psi = float(np.sum((live - self.reference) * np.log(live / self.reference)))
        if not self.categorical:
            return psi, float(stats.ks_2samp(values, self.sample).pvalue)
        table = np.stack([counts, np.round(self.reference_counts)])
        table = table[:, table.sum(0) > 0]
        if table.shape[1] < 2:                 # one class on both sides: nothing to compare
            return psi, 1.0
        return psi, float(stats.chi2_contingency(table, correction=False).pvalue)


def _smoothed(counts: np.ndarray) -> np.ndarray:
    return (counts + HALF) / (counts.sum() + HALF * len(counts))


class DriftDetector:
    """The live window against the manifest's `monitoring` block. Not thread-safe: the server calls it from its
    event loop only. `announce` gets one line when the verdict changes (drift found, drift cleared)."""

    def __init__(self, monitoring: dict, announce: Callable[[str], None] = print):
        drift = monitoring["drift"]
        self.psi_threshold, self.pvalue_threshold = drift["psi"], drift["pvalue"]
        self.window, self.min_samples = drift["window"], drift["min_samples"]
        self.class_scores = monitoring["class_scores"]
        self.features = [_Feature(spec, monitoring["samples"]) for spec in monitoring["features"]]
        self.announce = announce
        self.every = max(1, self.window // 10)
        self._values = np.zeros((self.window, len(self.features)))
        self._seen = 0              # samples observed since the start
        self._fresh = 0             # samples observed since the last verdict
        self.scores: list[Score] = []
        self.drift = False

    @property
    def samples(self) -> int:
        """Samples in the window."""
        return min(self._seen, self.window)

    @property
    def per_test(self) -> float:
        """The p-value threshold of one summary's test (Bonferroni over all of them)."""
        return self.pvalue_threshold / max(len(self.features), 1)

    def observe(self, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
        """Add one request's samples (named inputs and outputs) to the window; renew the verdict every window/10."""
        tensors = {"input": inputs, "output": outputs}
        summaries: dict[tuple[str, str], Summaries] = {}
        for feature in self.features:
            key = (feature.kind, feature.name)
            if key not in summaries:
                scores = self.class_scores.get(feature.name) if feature.kind == "output" else None
                summaries[key] = summarize(tensors[feature.kind][feature.name], scores)
        rows = np.stack([summaries[(f.kind, f.name)].values[f.summary] for f in self.features], axis=1)
        rows = rows[-self.window:]
        at = np.arange(self._seen, self._seen + len(rows)) % self.window
        self._values[at] = rows
        self._seen += len(rows)
        self._fresh += len(rows)
        if self._fresh >= self.every:
            self.evaluate()

    def evaluate(self) -> None:
        """Score the window (when it has at least min_samples and something new) and renew the verdict."""
        if not self._fresh or self.samples < self.min_samples:
            return
        self._fresh = 0
        window = self._values[:self.samples]
        self.scores = []
        for j, feature in enumerate(self.features):
            psi, pvalue = feature.score(window[:, j])
            drifting = psi > self.psi_threshold and pvalue < self.per_test
            self.scores.append(Score(feature.kind, feature.name, feature.summary, psi, pvalue, drifting))
        drifting = [s for s in self.scores if s.drifting]
        if drifting and not self.drift:
            self.announce("warning: drift: " + "; ".join(f"{s.kind} {s.name} {s.summary}: PSI {s.psi:.3g}, p "
                                                         f"{s.pvalue:.3g}" for s in drifting)
                          + f" over the last {self.samples} samples (thresholds PSI {self.psi_threshold:g}, p "
                          f"{self.per_test:.3g}); /health says drift: true")
        elif self.drift and not drifting:
            self.announce(f"drift cleared: the last {self.samples} samples are within the thresholds again")
        self.drift = bool(drifting)

    def status(self) -> dict:
        """What /health says about drift."""
        return {"enabled": True, "window": self.window, "samples": self.samples, "min_samples": self.min_samples,
                "psi_threshold": self.psi_threshold, "pvalue_threshold": self.pvalue_threshold,
                "tests": len(self.features),
                "drifting": [{"kind": s.kind, "name": s.name, "summary": s.summary} for s in self.scores
                             if s.drifting]}
