"""Calibration and evaluation data: .npz files, image folders, splits and random stand-ins.

A `Dataset` holds N-first arrays named after the model's inputs, plus optional integer labels. An input whose
batch axis is not the first (a recurrent state `[2, batch, 128]`) is held samples first too, and one without a batch
axis (a scalar sample rate) once per sample; `feeds` gives them as the model takes them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from edgeml.batching import to_model
from edgeml.errors import DataError, first_line
from edgeml.hashing import sha256_arrays
from edgeml.inputs.specs import TensorSpec, format_shape, moved_axes

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class Dataset:
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    source: str                       # where it came from, in words
    synthetic: bool = False           # random stand-in data
    preprocessing: dict | None = None
    classes: list[str] | None = None  # label names, for image folders
    # the batch axis of each input whose samples are not on its first (None: no batch axis; batching.to_model)
    axes: dict[str, int | None] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    @cached_property
    def sha256(self) -> str:
        arrays = dict(self.inputs)
        if self.labels is not None:
            arrays["__labels__"] = self.labels
        return sha256_arrays(arrays)

    def subset(self, index: np.ndarray, source: str) -> Dataset:
        return replace(self, inputs={k: v[index] for k, v in self.inputs.items()},
                       labels=None if self.labels is None else self.labels[index], source=source)

    def feeds(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Samples `start` to `stop` as the model takes them."""
        return to_model({k: v[start:stop] for k, v in self.inputs.items()}, self.axes)

    def describe(self) -> dict:
        return {
            "source": self.source,
            "samples": len(self),
            "labels": self.labels is not None,
            "classes": self.classes,
            "synthetic": self.synthetic,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class Preprocess:
    """How an image file becomes a model input: resize, scale, normalise, lay out."""
    size: tuple[int, int]                 # height, width
    layout: str = "NCHW"                  # or NHWC
    color: str = "rgb"                    # or gray
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def to_dict(self) -> dict:
        return {"size": list(self.size), "layout": self.layout, "color": self.color,
                "scale": self.scale, "mean": list(self.mean), "std": list(self.std)}


def parse_preprocess(text: str | None, spec: TensorSpec) -> Preprocess:
    """Read `size=224x224,mean=0.485/0.456/0.406,std=...,layout=NCHW,color=rgb,scale=0.0039`.

    Anything not given is taken from the model's input shape (layout, channels, size).
    """
    default = _preprocess_from_spec(spec)
    if not text:
        return default
    values: dict = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not value:
            raise DataError(f"--preprocess item '{item}' is not key=value")
        try:
            if key == "size":
                h, _, w = value.lower().partition("x")
                values["size"] = (int(h), int(w or h))
            elif key in ("mean", "std"):
                values[key] = tuple(float(v) for v in value.split("/"))
            elif key == "scale":
                values["scale"] = float(value)
            elif key == "layout" and value.upper() in ("NCHW", "NHWC"):
                values["layout"] = value.upper()
            elif key == "color" and value.lower() in ("rgb", "gray"):
                values["color"] = value.lower()
            else:
                raise ValueError
        except ValueError:
            raise DataError(
                f"--preprocess: cannot use '{item}' (keys: size=HxW, mean=a/b/c, std=a/b/c, "
                "scale=F, layout=NCHW|NHWC, color=rgb|gray)"
            ) from None
    return replace(default, **values)


def _preprocess_from_spec(spec: TensorSpec) -> Preprocess:
    shape = spec.shape
    if len(shape) != 4:
        raise DataError(
            f"image folders need a 4-D image input; input '{spec.name}' has shape {format_shape(shape)}"
        )
    if shape[1] in (1, 3):
        layout, channels, hw = "NCHW", shape[1], shape[2:]
    elif shape[3] in (1, 3):
        layout, channels, hw = "NHWC", shape[3], shape[1:3]
    else:
        layout, channels, hw = "NCHW", 3, shape[2:]
    size = tuple(d if isinstance(d, int) else 224 for d in hw)
    return Preprocess(size=size, layout=layout, color="gray" if channels == 1 else "rgb")


def load_data(path: str | Path, specs: list[TensorSpec], preprocess: str | None = None) -> Dataset:
    path = Path(path)
    if not path.exists():
        raise DataError(f"data not found: {path}")
    if path.is_dir():
        if len(specs) != 1:
            raise DataError("image folders work for single-input models; use an .npz for this model")
        dataset = load_image_folder(path, parse_preprocess(preprocess, specs[0]), specs[0].name)
    elif path.suffix.lower() == ".npz":
        if preprocess:
            raise DataError("--preprocess applies to image folders; .npz data is used as it is")
        dataset = load_npz(path)
    else:
        raise DataError(f"{path}: data must be an .npz file or an image folder (one sub-folder per class)")
    return conform(dataset, specs)


def load_npz(path: Path) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:
        raise DataError(f"cannot read {path} as .npz ({first_line(e)})") from e
    labels = arrays.pop("labels", None)
    return Dataset(arrays, labels, source=str(path))


def load_image_folder(root: Path, pre: Preprocess, input_name: str) -> Dataset:
    from PIL import Image

    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: an image folder needs one sub-folder per class, found none")
    images, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((root / name).iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as im:
                    im = im.convert("L" if pre.color == "gray" else "RGB")
                    im = im.resize((pre.size[1], pre.size[0]), Image.BILINEAR)
                    images.append(np.asarray(im, dtype=np.float32))
            except Exception as e:
                raise DataError(f"cannot read image {file} ({first_line(e)})") from e
            labels.append(label)
    if not images:
        raise DataError(f"{root}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    x = np.stack(images) * pre.scale
    if x.ndim == 3:
        x = x[..., None]
    x = (x - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    if pre.layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    return Dataset({input_name: np.ascontiguousarray(x, dtype=np.float32)},
                   np.asarray(labels, np.int64), source=str(root),
                   preprocessing=pre.to_dict(), classes=classes)


def conform(dataset: Dataset, specs: list[TensorSpec]) -> Dataset:
    """Check the arrays against the model's inputs, each held samples first (`samples_first`); cast floats/ints
    where it loses nothing."""
    names = {s.name for s in specs}
    if set(dataset.inputs) != names:
        raise DataError(
            f"{dataset.source}: arrays {sorted(dataset.inputs)} do not match the model's inputs "
            f"{sorted(names)}; name the arrays after the inputs (plus optional 'labels')"
        )
    batched = [s for s in specs if s.batch_axis is not None]
    counts = {len(samples_first(dataset.inputs[s.name], s, dataset.source)) for s in batched}
    if len(counts) > 1:
        raise DataError(f"{dataset.source}: inputs have different sample counts")
    inputs = {}
    count = counts.pop() if counts else None
    for spec in specs:
        a = samples_first(dataset.inputs[spec.name], spec, dataset.source, count)
        want = np.dtype(spec.dtype)
        if a.dtype != want:
            if want.kind == "f" and a.dtype.kind in "fiub":
                a = a.astype(want)
            elif want.kind in "iu" and a.dtype.kind in "iu":
                a = a.astype(want)
            else:
                raise DataError(f"{dataset.source}: '{spec.name}' is {a.dtype}, the model takes {want}")
        if a.dtype.kind == "f":
            _check_finite(a, dataset.source, spec.name)
        count = len(a)
        inputs[spec.name] = a
    if not count:
        raise DataError(f"{dataset.source}: the data has no samples")
    labels = dataset.labels
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != count:
            raise DataError(
                f"{dataset.source}: 'labels' must be {count} integer class indices, "
                f"got {labels.dtype} with shape {format_shape(labels.shape)}"
            )
        labels = labels.astype(np.int64)
    return replace(dataset, inputs=inputs, labels=labels, axes=moved_axes(specs))


def samples_first(a: np.ndarray, spec: TensorSpec, source: str, count: int | None = None) -> np.ndarray:
    """The data of input `spec` with the samples on the first axis. Data holds each input as the model takes it
    for all samples (the samples on its batch axis), or, for an input whose batch axis is not the first, one
    model-shaped array per sample (`[N, 2, 1, 128]`); an input without a batch axis holds one value, once or once
    per sample (all equal), repeated for the `count` samples of the others."""
    shape, axis, given = spec.shape, spec.batch_axis, a.shape
    if axis is None:
        if a.ndim == len(shape):                                  # given once
            a = np.broadcast_to(a, (count or 1, *a.shape))
        elif not (a.ndim == len(shape) + 1 and len(a) and (a == a[:1]).all() and count in (None, len(a))):
            raise DataError(f"{source}: '{spec.name}' has shape {format_shape(given)}; the model takes one value "
                            f"of shape ({format_shape(shape)}) for the whole batch (no batch axis): give it once, or "
                            "once per sample, all equal")
        return np.ascontiguousarray(a)
    if axis > 0 and a.ndim == len(shape) + 1 and a.shape[axis + 1] == 1:
        a = a.squeeze(axis + 1)                        # one model-shaped array per sample
    elif axis > 0 and a.ndim == len(shape):
        a = np.moveaxis(a, axis, 0)
    rest = shape[:axis] + shape[axis + 1:]
    if a.ndim != len(shape) or any(isinstance(d, int) and d != a.shape[i + 1] for i, d in enumerate(rest)):
        where = "first dimension = samples" if axis == 0 else f"samples on dimension {axis}, its batch axis"
        raise DataError(
            f"{source}: '{spec.name}' has shape {format_shape(given)}, the model expects "
            f"{format_shape(shape)} ({where})"
        )
    return np.ascontiguousarray(a) if axis else a


def _check_finite(a: np.ndarray, source: str, name: str) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        first = int(np.flatnonzero(bad.reshape(len(a), -1).any(axis=1))[0])
        raise DataError(f"{source}: '{name}' holds {int(bad.sum())} NaN or infinite value(s) (first in sample "
                        f"{first}); models are calibrated and judged on finite inputs only")


def split(dataset: Dataset, calibration_fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Split one dataset into disjoint calibration and evaluation parts (stratified by label)."""
    if not 0 < calibration_fraction < 1:
        raise DataError(f"--split must be between 0 and 1, got {calibration_fraction}")
    n = len(dataset)
    if n < 2:
        raise DataError(f"{dataset.source}: {n} sample(s) cannot be split into calibration and evaluation")
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if dataset.labels is None else \
        [np.flatnonzero(dataset.labels == c) for c in np.unique(dataset.labels)]
    calib = []
    for g in groups:
        g = rng.permutation(g)
        calib.extend(g[:int(round(len(g) * calibration_fraction))])
    calib_idx = np.sort(np.asarray(calib, dtype=np.int64))
    if len(calib_idx) in (0, n):
        calib_idx = np.sort(rng.permutation(n)[:max(1, min(n - 1, int(round(n * calibration_fraction))))])
    eval_idx = np.setdiff1d(np.arange(n), calib_idx)
    pct = f"{calibration_fraction:.0%}"
    return (dataset.subset(calib_idx, f"{dataset.source} (calibration split, {pct})"),
            dataset.subset(eval_idx, f"{dataset.source} (evaluation split, rest)"))


def random_dataset(specs: list[TensorSpec], n: int, seed: int, role: str) -> Dataset:
    """Random inputs for when no data is given: standard normal floats, small non-negative ints."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for spec in specs:
        shape = (n,) + spec.sample_shape()
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            inputs[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            inputs[spec.name] = rng.integers(0, 2, shape).astype(dtype)
        else:
            inputs[spec.name] = rng.integers(0, 100, shape).astype(dtype)
    return Dataset(inputs, None, source=f"random {role} inputs (seed {seed})", synthetic=True,
                   axes=moved_axes(specs))


def check_disjoint(calibration: Dataset, evaluation: Dataset) -> str | None:
    """Refuse identical calibration/evaluation sets; return a warning when samples overlap."""
    if calibration.synthetic or evaluation.synthetic:
        return None
    if calibration.sha256 == evaluation.sha256:
        raise DataError(
            "calibration and evaluation data are the same; give different sets, or give one "
            "with --data and --split to divide it"
        )
    seen = {_sample_key(calibration, i) for i in range(len(calibration))}
    shared = sum(_sample_key(evaluation, i) in seen for i in range(len(evaluation)))
    if shared:
        return (f"{shared} of {len(evaluation)} evaluation samples also appear in the calibration "
                "data; accuracy may be optimistic")
    return None


def _sample_key(dataset: Dataset, i: int) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(dataset.inputs):
        h.update(np.ascontiguousarray(dataset.inputs[name][i]).tobytes())
    return h.digest()


def at_least_two(a: np.ndarray) -> np.ndarray:
    """`a` with its first sample repeated when it has only one (exporters treat a batch of 1 as fixed)."""
    return a if len(a) >= 2 else np.concatenate([a, a])
