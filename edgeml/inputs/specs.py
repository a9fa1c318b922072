"""Tensor descriptions (name, shape, dtype, batch axis) and the --input-shape syntax.

An input's batch axis is the axis that holds the samples of a call. It is the first for most inputs; a recurrent
model's state (`state [2, batch, 128]`) has it elsewhere, and a scalar (a sample rate) has none: one value for the
whole call. edgeml holds data samples-first whatever the axis (edgeml.batching.to_samples / to_model move it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from edgeml.errors import InputSpecError

Dim = int | str | None  # a size, a symbolic name (e.g. "batch"), or unknown


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[Dim, ...]
    dtype: str | None = "float32"  # None: not given on the command line
    batch_axis: int | None = 0     # the axis of the samples; None: no batch axis (one value for the whole call)

    def concrete_shape(self, batch: int = 1) -> tuple[int, ...]:
        """The shape with a symbolic batch dimension set to `batch`."""
        dims = []
        for i, d in enumerate(self.shape):
            if isinstance(d, int):
                dims.append(d)
            elif i == self.batch_axis:
                dims.append(batch)
            else:
                raise InputSpecError(
                    f"input '{self.name}' has an unknown size in dimension {i} "
                    f"(shape {format_shape(self.shape)}); give it with --input-shape"
                )
        return tuple(dims)

    def sample_shape(self, batch: int = 1) -> tuple[int, ...]:
        """The concrete shape of one sample as edgeml holds it: the batch axis removed (kept whole without one)."""
        shape = self.concrete_shape(batch)
        return shape if self.batch_axis is None else shape[:self.batch_axis] + shape[self.batch_axis + 1:]

    def to_dict(self) -> dict:
        axis = {} if self.batch_axis == 0 else {"batch_axis": self.batch_axis}
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, **axis}


def moved_axes(specs) -> dict[str, int | None]:
    """The batch axis of each of `specs` (TensorSpecs, or anything with `name` and `batch_axis`) whose samples are not
    on its first axis: what edgeml.batching.to_model and to_samples take."""
    return {s.name: s.batch_axis for s in specs if s.batch_axis != 0}


def format_shape(shape: tuple[Dim, ...]) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)


_SPEC = re.compile(r"^(?:(?P<name>[A-Za-z_][\w.:/-]*?):)?(?P<dims>[\w?]+(?:[x,][\w?]+)*)(?::(?P<dtype>\w+))?$",
                   re.ASCII)
_DIM_NAME = re.compile(r"[A-Za-z_]\w*", re.ASCII)
_X = re.compile(r"(?<=[\d?])x|x(?=[\d?])")   # an x next to a size or ? separates; inside a name it is a letter
DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "float16", "float32", "float64")


def parse_input_shape(text: str) -> TensorSpec:
    """Parse `[name:]1x3x224x224[:dtype]`; a dimension may be a name (`batch`) or `?`, which marks the batch axis
    (`state:2x?x128`: the samples on the second axis; at most one per input).

    Dimensions are separated by `,` when the text has one, else by an `x` next to a size or `?`
    (`1xmax_len` is 1 and max_len; `batch,seq` needs the comma).
    """
    m = _SPEC.match(text.strip())
    if not m:
        raise InputSpecError(
            f"cannot read --input-shape {text!r}: expected [name:]DIMxDIMx...[:dtype], "
            "e.g. input:1x3x224x224 or ids:1x128:int64"
        )
    parts = m["dims"].split(",") if "," in m["dims"] else _X.split(m["dims"])
    dims = tuple(_dim(part, text) for part in parts)
    if dims.count(None) > 1:
        raise InputSpecError(f"--input-shape {text!r}: at most one '?' per input (it marks the batch axis)")
    dtype = None
    if m["dtype"]:
        try:
            dtype = np.dtype(m["dtype"]).name
        except (TypeError, ValueError, OverflowError):
            raise InputSpecError(f"--input-shape {text!r}: unknown dtype '{m['dtype']}'") from None
        if dtype not in DTYPES:
            raise InputSpecError(f"--input-shape {text!r}: '{m['dtype']}' is not a numeric dtype "
                                 f"({', '.join(DTYPES)})")
    return TensorSpec(m["name"] or "", dims, dtype, dims.index(None) if None in dims else 0)


def _dim(part: str, text: str) -> Dim:
    if part.isdigit():
        if int(part) <= 0:
            raise InputSpecError(f"--input-shape {text!r}: dimensions must be positive")
        return int(part)
    if part == "?":
        return None
    if not part:
        raise InputSpecError(f"--input-shape {text!r}: empty dimension (a separator at an end, or two in a row)")
    if not _DIM_NAME.fullmatch(part):
        raise InputSpecError(f"--input-shape {text!r}: dimension '{part}' is not a size, '?' or a name")
    return part


def reconcile(model_specs: list[TensorSpec] | None, given: list[TensorSpec],
              default_names: list[str] | None = None) -> list[TensorSpec]:
    """Combine what the model says about its inputs with what the user gave.

    The model's own fixed sizes win and a contradiction is an error; the user's sizes fill
    the model's symbolic dimensions. Unnamed user specs are matched by position.
    """
    if model_specs is None:
        if not given:
            names = default_names or ["input"]
            raise InputSpecError(
                f"this model does not record its input shapes; give them with --input-shape "
                f"NAME:DIMS (inputs: {', '.join(names)}), e.g. --input-shape {names[0]}:1x3x224x224"
            )
        names = default_names or []
        if default_names is not None and len(given) != len(default_names):
            raise InputSpecError(
                f"the model takes {len(default_names)} input(s) ({', '.join(default_names)}) "
                f"but {len(given)} --input-shape value(s) were given"
            )
        out = []
        for i, g in enumerate(given):
            name = g.name or (names[i] if i < len(names) else ("input" if len(given) == 1 else f"input_{i}"))
            if names and name not in names:
                raise InputSpecError(
                    f"--input-shape names '{name}', but the model's inputs are {', '.join(names)}"
                )
            out.append(TensorSpec(name, g.shape, g.dtype or "float32", g.batch_axis if g.shape else None))
        return out

    if not given:
        return list(model_specs)
    if len(given) > len(model_specs):
        raise InputSpecError(
            f"{len(given)} --input-shape values given, but the model has "
            f"{len(model_specs)} input(s): {', '.join(s.name for s in model_specs)}"
        )
    by_name = {s.name: s for s in model_specs}
    updates: dict[str, TensorSpec] = {}
    for i, g in enumerate(given):
        if g.name:
            if g.name not in by_name:
                raise InputSpecError(
                    f"--input-shape names '{g.name}', but the model's inputs are "
                    f"{', '.join(by_name)}"
                )
            spec = by_name[g.name]
        else:
            spec = model_specs[i]
        updates[spec.name] = _merge(spec, g)
    return [updates.get(s.name, s) for s in model_specs]


def _merge(model: TensorSpec, given: TensorSpec) -> TensorSpec:
    if len(model.shape) != len(given.shape):
        raise InputSpecError(
            f"input '{model.name}': the model expects rank {len(model.shape)} "
            f"({format_shape(model.shape)}), --input-shape gives {format_shape(given.shape)}"
        )
    if given.dtype and given.dtype != model.dtype:
        raise InputSpecError(
            f"input '{model.name}': the model takes {model.dtype}, --input-shape says {given.dtype}"
        )
    dims: list[Dim] = []
    for i, (m, g) in enumerate(zip(model.shape, given.shape)):
        if isinstance(m, int) and isinstance(g, int) and m != g:
            raise InputSpecError(
                f"input '{model.name}': the model fixes dimension {i} to {m}, "
                f"--input-shape gives {g} (model shape {format_shape(model.shape)})"
            )
        dims.append(m if isinstance(m, int) else g if g is not None else m)
    marked = given.shape.index(None) if None in given.shape else model.batch_axis
    return TensorSpec(model.name, tuple(dims), model.dtype, marked)


def with_batch_axes(specs: list[TensorSpec]) -> list[TensorSpec]:
    """`specs` (a model's inputs) with each one's batch axis found from the graph: none for a scalar; the first
    axis, unless the first is a fixed size that no other input starts with (`state [2, batch, 128]` beside
    `input [batch, 512]`); then the axis that holds the others' batch: their symbolic name, else the first symbolic
    axis, else their fixed size, else an axis of 1 (`[2, 1, 128]` beside a dynamic input)."""
    def axis(spec: TensorSpec) -> int | None:
        if not spec.shape:
            return None
        first, others = spec.shape[0], [s.shape[0] for s in specs if s is not spec and s.shape]
        if not isinstance(first, int) or not others or first in others:
            return 0
        rest = list(enumerate(spec.shape))[1:]
        found = ([i for i, d in rest if isinstance(d, str) and d in others]
                 or [i for i, d in rest if not isinstance(d, int)]
                 or [i for i, d in rest if d in others]
                 or [i for i, d in rest if d == 1])
        return found[0] if found else 0
    return [replace(s, batch_axis=axis(s)) for s in specs]
