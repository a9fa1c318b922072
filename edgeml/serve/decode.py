"""A predict request's body, turned into the model's inputs or refused with one line and a 4xx status.

Two bodies are read: JSON `{"inputs": {NAME: nested lists}}` and an .npz with one array per input
(np.load with allow_pickle=False: an object array or a pickle is refused, never loaded). Each array is
checked against the manifest's input spec: its name, rank, fixed dimensions (its batch axis, the first
unless the manifest says otherwise, is the sample count, any size up to a limit; an input without one is given once
for the request), dtype (numbers only; no floats for an integer input) and finite values. The inputs come out
samples first (edgeml.batching.to_samples).
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass

import numpy as np

from edgeml.batching import to_samples
from edgeml.errors import EdgemlError
from edgeml.inputs.specs import moved_axes

JSON_TYPES = ("application/json",)
NPZ_TYPES = ("application/octet-stream", "application/x-npz")


class RequestError(EdgemlError):
    """A client's mistake: `status` is the HTTP status to answer with, `kind` its label in /metrics."""

    def __init__(self, status: int, kind: str, message: str):
        super().__init__(message)
        self.status = status
        self.kind = kind


@dataclass(frozen=True)
class InputSpec:
    """One model input as the manifest describes it: fixed dimensions are ints, symbolic ones names."""
    name: str
    shape: tuple
    dtype: np.dtype
    batch_axis: int | None = 0          # None: no batch axis (one value for the request)

    @classmethod
    def of(cls, spec: dict) -> InputSpec:
        return cls(spec["name"], tuple(spec["shape"]), np.dtype(spec["dtype"]), spec.get("batch_axis", 0))

    def describe(self) -> str:
        dims = ["N" if i == self.batch_axis else str(d) for i, d in enumerate(self.shape)]
        return f"({', '.join(dims)}) {self.dtype}"


def decode(body: bytes, content_type: str | None, specs: list[InputSpec], max_samples: int,
           max_bytes: int) -> dict[str, np.ndarray]:
    """The inputs of one request, named and typed as the model takes them, with the same sample count."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media not in JSON_TYPES + NPZ_TYPES:
        raise RequestError(415, "content_type", f"Content-Type {media or '(none)'} is not supported: send "
                           "application/json or an .npz as application/octet-stream (or application/x-npz)")
    if not body:
        raise RequestError(400, "empty_body", "the request body is empty: send the model's inputs")
    arrays = _from_json(body) if media in JSON_TYPES else _from_npz(body, max_bytes)
    names = [s.name for s in specs]
    unknown = [n for n in arrays if n not in names]
    if unknown:
        raise RequestError(400, "unknown_input", f"unknown input {', '.join(map(repr, unknown))}: the model's inputs "
                           f"are {', '.join(names)}")
    missing = [n for n in names if n not in arrays]
    if missing:
        raise RequestError(400, "missing_input", f"missing input {', '.join(map(repr, missing))}: the model's "
                           f"inputs are {', '.join(names)}")
    feeds = {s.name: _checked(arrays[s.name], s) for s in specs}
    sizes = {s.name: feeds[s.name].shape[s.batch_axis] for s in specs if s.batch_axis is not None}
    if len(set(sizes.values())) > 1:
        raise RequestError(400, "bad_shape", "the inputs have different sample counts (batch axis): "
                           + ", ".join(f"{n} {size}" for n, size in sizes.items()))
    count = next(iter(sizes.values()), 1)
    if count == 0:
        raise RequestError(400, "bad_shape", "no samples: the inputs' batch axis is 0 long")
    if count > max_samples:
        raise RequestError(413, "too_many_samples", f"{count} samples in one request; this server takes at most "
                           f"{max_samples} (--max-samples)")
    return to_samples(feeds, moved_axes(specs))


def _from_json(body: bytes) -> dict[str, object]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:       # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RequestError(400, "malformed_json", f"the body is not valid JSON: {str(e).splitlines()[0][:120]}") \
            from None
    if not isinstance(data, dict) or not isinstance(data.get("inputs"), dict) or set(data) != {"inputs"}:
        raise RequestError(400, "malformed_json", 'the JSON body must be {"inputs": {NAME: nested lists, ...}}')
    return data["inputs"]


def _from_npz(body: bytes, max_bytes: int) -> dict[str, object]:
    """The arrays of an .npz body. Its uncompressed size counts against the body limit (a small compressed
    body must not unpack into gigabytes); np.load runs with allow_pickle=False."""
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, ValueError, EOFError):
        raise RequestError(400, "malformed_npz", "the body is not an .npz file (a zip of .npy arrays, as numpy.savez "
                           "writes)") from None
    if unpacked > max_bytes:
        raise RequestError(413, "body_too_large", f"the .npz unpacks to {unpacked:,} bytes; this server takes at "
                           f"most {max_bytes:,} (--max-body-mb)")
    arrays, key = {}, None
    try:
        with np.load(io.BytesIO(body), allow_pickle=False) as data:
            for key in data.files:
                arrays[key] = data[key]
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise RequestError(400, "pickle_refused", f"array {key!r} of the .npz is an object array (pickled data); "
                               "send numeric arrays") from None
        raise RequestError(400, "malformed_npz", f"array {key!r} of the .npz cannot be read: {e}") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise RequestError(400, "malformed_npz", f"the .npz cannot be read: {type(e).__name__}: "
                           f"{str(e).splitlines()[0][:120] if str(e) else 'corrupt'}") from None
    return arrays


def _checked(value: object, spec: InputSpec) -> np.ndarray:
    """`value` as an array of the spec's dtype, or a RequestError naming what is wrong with it."""
    try:
        array = value if isinstance(value, np.ndarray) else np.array(value)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise RequestError(400, "bad_shape", f"input {spec.name!r} is not a rectangular array of numbers (ragged "
                           f"nested lists?): the model takes {spec.describe()}") from None
    kind, want = array.dtype.kind, spec.dtype.kind
    numeric = "iu" if want in "iu" else "iuf" if want == "f" else want
    if kind not in numeric:
        found = {"U": "strings", "S": "bytes", "O": "values that are not numbers", "b": "booleans",
                 "f": "floats", "c": "complex numbers"}.get(kind, str(array.dtype))
        raise RequestError(400, "bad_dtype", f"input {spec.name!r} holds {found}; the model takes {spec.dtype}")
    if array.ndim != len(spec.shape) or any(isinstance(d, int) and d > 0 and got != d and i != spec.batch_axis
                                             for i, (got, d) in enumerate(zip(array.shape, spec.shape))):
        raise RequestError(400, "bad_shape", f"input {spec.name!r} has shape {tuple(array.shape)}; the model takes "
                           f"{spec.describe()}" + ("" if spec.batch_axis is None else " (N: the number of samples)"))
    if want in "iu":
        limits = np.iinfo(spec.dtype)
        if array.size and (array.min() < limits.min or array.max() > limits.max):
            raise RequestError(400, "bad_value", f"input {spec.name!r} has values outside the range of "
                               f"{spec.dtype} ({limits.min}..{limits.max})")
    with np.errstate(over="ignore", invalid="ignore"):
        array = np.ascontiguousarray(array, dtype=spec.dtype)
    if want == "f" and not np.isfinite(array).all():
        raise RequestError(400, "not_finite", f"input {spec.name!r} has NaN or infinite values (or values too large "
                           f"for {spec.dtype})")
    return array
