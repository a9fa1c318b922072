"""Samples in and out of a model. edgeml holds data samples first, whatever axis a model takes them on
(`to_model`, `to_samples`), and runs a model on chunks of them (`batched`) at the batch size it fixes
(`model_batch`).

A bundle's run.py travels without edgeml, so it carries a copy of this code: edgeml.bundle.write.run_py puts
everything from `class NoBatchAxis` on in place of the line of edgeml/bundle/standalone.py that imports it.
"""

from __future__ import annotations

import numpy as np


class Unusable(Exception):
    """Data a model cannot be run on (in a bundle's run.py, its own Unusable stands here: exit 2)."""


class NoBatchAxis(Unusable):
    """An output of a call of several samples has no axis of their count."""


def batch_axes(specs: list[dict]) -> dict[str, int | None]:
    """The batch axis of each input whose samples are not on its first axis (None: it has no batch axis), from the
    manifest's input specs (`batch_axis`, the first when absent)."""
    return {s["name"]: s["batch_axis"] for s in specs if s.get("batch_axis", 0) != 0}


def to_model(feeds: dict[str, np.ndarray], axes: dict[str, int | None]) -> dict[str, np.ndarray]:
    """Samples-first arrays as the model takes them: the samples moved to each input's batch axis (`axes`, from
    `batch_axes`); an input without one gets the first sample's value, for the whole call."""
    out = {}
    for name, value in feeds.items():
        axis = axes.get(name, 0)
        out[name] = value if axis == 0 else np.asarray(value[0]) if axis is None else \
            np.ascontiguousarray(np.moveaxis(value, 0, axis))
    return out


def to_samples(feeds: dict[str, np.ndarray], axes: dict[str, int | None]) -> dict[str, np.ndarray]:
    """Arrays as the model takes them, samples first (the inverse of `to_model`): an input without a batch axis
    is repeated for each sample of the others."""
    count = next((np.shape(v)[axes.get(n, 0)] for n, v in feeds.items() if axes.get(n, 0) is not None), 1)
    out = {}
    for name, value in feeds.items():
        axis = axes.get(name, 0)
        out[name] = value if axis == 0 else np.moveaxis(value, axis, 0) if axis is not None else \
            np.broadcast_to(value, (count, *np.shape(value)))
    return out


def batched(call, batch: int | None, fixed: bool = True, axes: dict[str, int | None] | None = None):
    """`call` on chunks of `batch` samples, the last padded with its last sample when `fixed` (a model with a fixed
    batch size), or on all samples at once when `batch` is None; the outputs with one sample per row of the first
    axis. The feeds are samples first; each chunk reaches `call` as the model takes it (`to_model` with `axes`).

    Each output's batch axis is found on the first call and kept for the others (so a last chunk of one sample
    is read like the rest): the first axis of the call's sample count, so that a sequence model's
    [time, batch, classes] becomes [batch, time, classes]. A call of one sample whose output's first axis is
    not 1 gives that sample's whole output (a new leading axis). When an output of several samples has no axis of
    their count, every sample runs alone, unless the batch is fixed.
    """
    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        count = len(next(iter(feeds.values())))
        size = batch or count
        found = None                 # each output's batch axis
        parts = []
        for start in range(0, count, size):
            chunk = {k: v[start:start + size] for k, v in feeds.items()}
            fed = keep = len(next(iter(chunk.values())))
            if fixed and fed < size:
                chunk = {k: np.concatenate([v, np.repeat(v[-1:], size - fed, axis=0)]) for k, v in chunk.items()}
                fed = size
            outputs = [np.array(o) for o in call(to_model(chunk, axes or {}))]   # a copy: runtimes reuse buffers
            if found is None:
                try:
                    found = [_batch_axis(o, fed) for o in outputs]
                except NoBatchAxis:
                    if fixed and batch:
                        raise
                    return batched(call, 1, fixed, axes)(feeds)
            parts.append([o[None] if axis is None else np.moveaxis(o, axis, 0)[:keep]
                          for o, axis in zip(outputs, found)])
        return [np.concatenate(column) for column in zip(*parts)]
    return run


def _batch_axis(output: np.ndarray, fed: int) -> int | None:
    """The axis of `output` that holds the `fed` samples of its call; None for a call of one sample whose output
    does not start with an axis of 1."""
    if fed == 1 and (output.ndim == 0 or output.shape[0] != 1):
        return None
    axis = next((axis for axis, size in enumerate(output.shape) if size == fed), None)
    if axis is None:
        raise NoBatchAxis(f"an output of shape {tuple(output.shape)} has no axis of the batch's size {fed}: give "
                          "the model a batch dimension, or data of one sample a call")
    return axis


def model_batch(shapes, axes=None) -> int | None:
    """The batch size a model with inputs of `shapes` fixes: the size of the batch axis (`axes`, one per shape: the
    first when not given; None: no batch axis) when every input fixes it to the same size; 1 when only some inputs
    fix it, or to different sizes (a recurrent model's state h: 1x64 beside a dynamic audio input); None when none
    fixes it. Scalar inputs do not count."""
    firsts = {_fixed(shape[axis]) for shape, axis in zip(shapes, axes or [0] * len(shapes))
              if axis is not None and len(shape) > axis}
    if firsts <= {None}:
        return None
    return firsts.pop() if len(firsts) == 1 else 1


def _fixed(size) -> int | None:
    return size if isinstance(size, int) and size > 0 else None
