"""Running a model over a dataset, and comparing candidates with the original.

Quality is judged by one number per candidate, chosen by what the data allows:
top-1 accuracy when labels exist, else top-1 agreement with the original for classifier-like
outputs, else mean cosine similarity to the original's outputs; for outputs of fewer than `FEW_VALUES`
values per sample (a speech probability, a quality score) R², since the cosine of two positive numbers is 1
however far apart they are.
"""

from __future__ import annotations

import numpy as np

from edgeml.batching import NoBatchAxis, batched
from edgeml.errors import DataError
from edgeml.inputs.data import Dataset
from edgeml.runtimes.base import Runner


def predict(runner: Runner, dataset: Dataset, batch_size: int, fixed_batch: bool = False) -> list[np.ndarray]:
    """All outputs of `runner` over `dataset`, one sample per row of the first axis, in batches of `batch_size`.

    With `fixed_batch` (a model whose batch dimension is a fixed size) the last batch is padded
    to `batch_size` and the padding dropped from the outputs. Outputs whose batch axis is not the first
    are read as the bundle's run.py reads them (edgeml.batching.batched).
    """
    try:
        return batched(runner.run, batch_size, fixed_batch, dataset.axes)(dataset.inputs)
    except NoBatchAxis as e:
        raise DataError(str(e)) from e


METRICS = ("auto", "accuracy", "agreement", "cosine", "r2")
CONTINUOUS = ("cosine", "r2")       # shown as numbers, not percentages
FEW_VALUES = 4                      # per sample: fewer and cosine says little (the auto metric is r2)


def quality_metric(reference: list[np.ndarray], labels: np.ndarray | None, requested: str = "auto",
                   source: str | None = None) -> str:
    """The metric `requested`, checked against the outputs and labels; for "auto", accuracy when
    labels exist, else agreement for classifier-like outputs (2-D, several columns), else cosine.
    An embedding model also has 2-D outputs: ask for cosine (--metric cosine)."""
    primary = reference[0]
    classifier = primary.ndim == 2 and primary.shape[1] > 1
    if requested in CONTINUOUS:
        return requested
    if requested in ("accuracy", "agreement") and not classifier:
        raise DataError(f"--metric {requested} compares top-1 classes, but the model's first output has shape "
                        f"{tuple(primary.shape)}, not (samples, classes): use --metric cosine")
    if requested == "accuracy" and labels is None:
        raise DataError("--metric accuracy needs labels in the evaluation data (an integer 'labels' array, or an "
                        "image folder with one sub-folder per class)")
    if requested == "agreement":
        return "agreement"
    if classifier and labels is not None:
        if labels.max(initial=0) >= primary.shape[1] or labels.min(initial=0) < 0:
            where = f"{source}: " if source else ""
            raise DataError(f"{where}labels range {labels.min()}..{labels.max()}, but the model scores "
                            f"{primary.shape[1]} classes (0..{primary.shape[1] - 1})")
        return "accuracy"
    if classifier:
        return "agreement"
    return "r2" if primary[:1].size < FEW_VALUES else "cosine"


def compare(outputs: list[np.ndarray], reference: list[np.ndarray], labels: np.ndarray | None) -> dict:
    """Accuracy (if labels), agreement, cosine and max error of `outputs` against `reference`.

    Classifier-like outputs also get `kl`, the mean KL(softmax(reference) || softmax(outputs)),
    and, with labels, `per_class`: {class index: accuracy} for the classes the labels contain.
    """
    primary, ref = outputs[0], reference[0]
    metrics: dict = {}
    if primary.ndim == 2 and primary.shape[1] > 1:
        top1 = primary.argmax(axis=1)
        metrics["agreement"] = float(np.mean(top1 == ref.argmax(axis=1)))
        if labels is not None:
            metrics["accuracy"] = float(np.mean(top1 == labels))
            metrics["per_class"] = {str(int(c)): float(np.mean(top1[labels == c] == c))
                                    for c in np.unique(labels)}
        log_p, log_q = _log_softmax(ref), _log_softmax(primary)
        metrics["kl"] = float(np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=1)))
    metrics["cosine"] = float(np.mean(_cosines(primary, ref)))
    metrics["r2"] = float(np.mean(_r2(primary, ref)))
    metrics["max_abs_error"] = float(max(np.max(np.abs(o.astype(np.float64) - r)) if o.size else 0.0
                                         for o, r in zip(outputs, reference)))
    return metrics


def sample_scores(outputs: list[np.ndarray], reference: list[np.ndarray], labels: np.ndarray | None,
                  metric: str) -> np.ndarray:
    """`metric` per evaluation sample, as float64: whether the top-1 class is the label (accuracy) or the
    original's top-1 class (agreement), 1 or 0, the cosine to the original's output, or its share of R² (`_r2`).
    Their mean is `compare(...)[metric]`."""
    primary, ref = outputs[0], reference[0]
    if metric == "cosine":
        return _cosines(primary, ref)
    if metric == "r2":
        return _r2(primary, ref)
    if metric not in ("accuracy", "agreement"):
        raise ValueError(f"unknown quality metric '{metric}'")
    truth = labels if metric == "accuracy" else ref.argmax(axis=1)
    if truth is None:
        raise ValueError("accuracy needs labels")
    return (primary.argmax(axis=1) == truth).astype(np.float64)


def _cosines(primary: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Cosine similarity per sample of the flattened outputs (1 where either is all zeros)."""
    a = primary.reshape(len(primary), -1).astype(np.float64)
    b = ref.reshape(len(ref), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(norms > 0, np.sum(a * b, axis=1) / np.maximum(norms, 1e-300), 1.0)


def _r2(primary: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per sample, 1 - its squared error to the original / the original's variance across the samples, whose mean
    is R² (1 - SSE / SST). Where the original hardly varies (one sample, a constant output), its mean square
    stands in for the variance."""
    a = primary.reshape(len(primary), -1).astype(np.float64)
    b = ref.reshape(len(ref), -1).astype(np.float64)
    spread = float(np.mean(np.sum((b - b.mean(axis=0)) ** 2, axis=1)))
    square = float(np.mean(np.sum(b ** 2, axis=1)))
    scale = spread if spread > 1e-6 * square else square
    return 1.0 - np.sum((a - b) ** 2, axis=1) / max(scale, 1e-300)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.sum(np.exp(x), axis=1, keepdims=True))
