"""Running a model over a dataset, and comparing candidates with the original.

Quality is judged by one number per candidate, chosen by what the data allows:
top-1 accuracy when labels exist, else top-1 agreement with the original for classifier-like
outputs, else mean cosine similarity to the original's outputs.
"""

from __future__ import annotations

import numpy as np

from edgeml.errors import DataError
from edgeml.inputs.data import Dataset
from edgeml.runtimes.base import Runner


def predict(runner: Runner, dataset: Dataset, batch_size: int, fixed_batch: bool = False) -> list[np.ndarray]:
    """All outputs of `runner` over `dataset`, one sample per row of the first axis.

    With `fixed_batch` (a model whose batch dimension is a fixed size) the last batch is padded
    to `batch_size` and the padding dropped from the outputs.

    An output's batch axis is the first one of the batch's size: a sequence model's [time, batch, classes]
    output is moved to [batch, time, classes]. When a call takes one sample, an output whose first axis is
    not 1 is that sample's whole output (a new leading axis). When no axis of a batched call's output has the
    batch's size, the batch runs again one sample a call.
    """
    parts: list[list[np.ndarray]] = []
    for start in range(0, len(dataset), batch_size):
        feeds = dataset.feeds(start, start + batch_size)
        fed = keep = len(next(iter(feeds.values())))
        if fed < batch_size and fixed_batch:
            feeds = {k: np.concatenate([v, np.repeat(v[-1:], batch_size - fed, axis=0)]) for k, v in feeds.items()}
            fed = batch_size
        outputs = [np.asarray(o) for o in runner.run(feeds)]
        try:
            parts.append([_samples(o, fed, keep) for o in outputs])
        except DataError:
            if fixed_batch:
                raise
            parts += [[_samples(np.asarray(o), 1, 1) for o in runner.run(dataset.feeds(i, i + 1))]
                      for i in range(start, start + keep)]
    return [np.concatenate(column) for column in zip(*parts)]


def _samples(output: np.ndarray, fed: int, keep: int) -> np.ndarray:
    """The first `keep` samples of one call's `output` (`fed` samples in), samples on the first axis."""
    if fed == 1 and (output.ndim == 0 or output.shape[0] != 1):
        return output[None]                   # one sample's whole output
    axis = next((axis for axis, size in enumerate(output.shape) if size == fed), None)
    if axis is None:
        raise DataError(f"an output of shape {tuple(output.shape)} has no axis of the batch's size {fed}: "
                        "give the model a batch dimension, or data of one sample a call")
    return np.moveaxis(output, axis, 0)[:keep]


METRICS = ("auto", "accuracy", "agreement", "cosine")


def quality_metric(reference: list[np.ndarray], labels: np.ndarray | None, requested: str = "auto",
                   source: str | None = None) -> str:
    """The metric `requested`, checked against the outputs and labels; for "auto", accuracy when
    labels exist, else agreement for classifier-like outputs (2-D, several columns), else cosine.
    An embedding model also has 2-D outputs: ask for cosine (--metric cosine)."""
    primary = reference[0]
    classifier = primary.ndim == 2 and primary.shape[1] > 1
    if requested == "cosine":
        return "cosine"
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
    return "agreement" if classifier else "cosine"


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
    metrics["max_abs_error"] = float(max(np.max(np.abs(o.astype(np.float64) - r)) if o.size else 0.0
                                         for o, r in zip(outputs, reference)))
    return metrics


def sample_scores(outputs: list[np.ndarray], reference: list[np.ndarray], labels: np.ndarray | None,
                  metric: str) -> np.ndarray:
    """`metric` per evaluation sample, as float64: whether the top-1 class is the label (accuracy) or the
    original's top-1 class (agreement), 1 or 0, or the cosine to the original's output. Their mean is
    `compare(...)[metric]`."""
    primary, ref = outputs[0], reference[0]
    if metric == "cosine":
        return _cosines(primary, ref)
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


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.sum(np.exp(x), axis=1, keepdims=True))
