"""How sure a quality drop is, and whether the data can resolve the accuracy budget at all.

A drop is judged on a finite evaluation set, so it carries sampling error:

- `drop_uncertainty` gives a 95% confidence interval for the drop by the paired bootstrap: the
  per-sample differences (original's score minus candidate's, on the same samples) are resampled
  with replacement and the interval is the 2.5th and 97.5th percentiles of their mean. For top-1
  accuracy it adds the exact McNemar test: of the samples where exactly one of the two is right,
  is the split between "became wrong" and "became right" more uneven than chance?
- `resolution` says when a top-1 metric moves in steps coarser than the budget: with n samples
  the metric changes by 1/n per sample, so a 1-point budget judged on 64 samples (steps of 1.6
  points) cannot accept any changed prediction, and cannot tell a drop within the budget from one
  just over it.

Known limit: a percentile bootstrap cannot see what did not happen. When no prediction changed,
its interval is [0, 0] although the true change rate may be up to about 3/n (the "rule of three");
`worse`/`better` record the counts behind the interval, and the report shows them.
"""

from __future__ import annotations

import math

import numpy as np

from edgeml.measure.evaluate import sample_scores

RESAMPLES = 2000
CONFIDENCE = 0.95
TOP1 = ("accuracy", "agreement")
CHUNK_ELEMENTS = 2_000_000      # indices drawn at once by the bootstrap of continuous values (16 MB)
FEW_VALUES = 16                 # up to this many distinct values, resample counts instead of indices


def drop_uncertainty(outputs: list[np.ndarray], reference: list[np.ndarray], labels: np.ndarray | None,
                     metric: str, seed: int = 0, resamples: int = RESAMPLES) -> dict:
    """What is known about the quality drop of `outputs` against the original model's `reference`.

    The drop per sample is the original's score minus the candidate's (see `evaluate.sample_scores`):
    accuracy: original correct - candidate correct (1, 0 or -1); agreement: 1 when the candidate's top-1
    class differs from the original's; cosine: the original's self-cosine (1) - the candidate's cosine.
    Their mean is the row's `quality_drop`. Returns, JSON-ready:

    - ci95: [low, high], the paired bootstrap 95% interval of the mean (`resamples`, seeded by `seed`)
    - samples: how many evaluation samples judged it
    - step: the smallest change of a top-1 metric (1 / samples); None for cosine
    - worse, better: top-1 metrics only (else None). Accuracy: samples the original got right and the
      candidate wrong, and the reverse. Agreement: samples whose top-1 class changed, and 0.
    - mcnemar_p: accuracy only, the exact two-sided McNemar p-value of worse against better. None for
      agreement: the original always agrees with itself, so every discordant sample counts against the
      candidate and the test would only ask whether any prediction changed, which `worse` already says.
      None for cosine (no pairs of right and wrong).
    """
    drops = (sample_scores(reference, reference, labels, metric)
             - sample_scores(outputs, reference, labels, metric))
    n = len(drops)
    low, high = bootstrap_mean_ci(drops, resamples, seed)
    result = {"ci95": [low, high], "samples": n, "step": 1 / n if metric in TOP1 else None,
              "worse": None, "better": None, "mcnemar_p": None}
    if metric in TOP1:
        worse, better = int(np.sum(drops > 0)), int(np.sum(drops < 0))
        result.update(worse=worse, better=better)
        if metric == "accuracy":
            result["mcnemar_p"] = mcnemar_exact(worse, better)
    return result


def bootstrap_mean_ci(values: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean of `values` (resampled with replacement).

    Values with few distinct levels (top-1 scores: -1, 0, 1) are resampled as multinomial counts of
    each level, which is the same distribution as drawing indices; other values draw indices in chunks
    of at most CHUNK_ELEMENTS, so memory stays bounded whatever the sample count.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    n = len(values)
    if n == 0:
        raise ValueError("no samples to bootstrap")
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])
    rng = np.random.default_rng(seed)
    levels, counts = np.unique(values, return_counts=True)
    if len(levels) <= FEW_VALUES:
        means = rng.multinomial(n, counts / n, size=resamples) @ levels / n
    else:
        means = np.empty(resamples)
        chunk = max(1, CHUNK_ELEMENTS // n)
        for start in range(0, resamples, chunk):
            size = min(chunk, resamples - start)
            means[start:start + size] = values[rng.integers(0, n, (size, n))].mean(axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def mcnemar_exact(worse: int, better: int) -> float:
    """Exact two-sided McNemar p-value: twice the binomial(worse + better, 1/2) tail at min(worse, better),
    capped at 1. Summed in log space, so it stays exact to float precision for any count."""
    m, k = worse + better, min(worse, better)
    if m == 0 or 2 * k >= m:
        return 1.0
    j = np.arange(1, k + 1, dtype=np.float64)
    log_comb = np.concatenate([[0.0], np.cumsum(np.log(m - j + 1) - np.log(j))])     # log C(m, 0..k)
    top = log_comb.max()
    log_tail = top + math.log(np.sum(np.exp(log_comb - top))) - m * math.log(2)
    return min(1.0, 2 * math.exp(log_tail))


def resolution(samples: int, metric: str, budget: float, data: str = "the evaluation set") -> str | None:
    """A one-line note when `data` (`samples` of them) is too coarse for the budget, else None.

    A top-1 metric on n samples moves in steps of 1/n. When that step is larger than the budget, the
    only drop the budget accepts is none at all: one changed sample already breaks it, and a
    drop just within the budget cannot be told from one just over it. ceil(1 / budget) samples make
    the step no larger than the budget, so one changed sample fits within it; that is the least that
    resolves it. (Whether a given drop is *significantly* within the budget depends on how many
    predictions changed, not only on n: that is what each row's confidence interval says.)
    A budget of 0 asks for no drop at all, which any sample count can judge; cosine has no step.
    """
    if metric not in TOP1 or budget <= 0 or samples <= 0:
        return None
    step = 1 / samples
    if step <= budget * (1 + 1e-9):
        return None
    needed = math.ceil(1 / budget - 1e-9)
    return (f"{data} has {samples} samples: {metric} moves in steps of {points(step)} points, coarser than the "
            f"{points(budget)}-point budget (one changed sample already breaks it); give at least {needed} "
            "samples to resolve it")


def points(fraction: float) -> str:
    """A fraction in percentage points, short: 0.015625 -> 1.6, 0.01 -> 1, 0.005 -> 0.5."""
    value = fraction * 100
    return f"{value:.1f}".rstrip("0").rstrip(".") if value >= 1 else f"{value:.2g}"
