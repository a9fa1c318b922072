"""Pruning of a PyTorch module, one file per kind:
- structured: removes whole channels through torch-pruning's dependency graph (fewer MACs everywhere);
- unstructured: zeroes single weights (smaller compressed weights, no speed-up on dense runtimes);
- semistructured: 2:4 masks for the sparse tensor cores of NVIDIA GPUs under TensorRT.

Every pass works on a deep copy and returns it in a `PruneResult`; the module passed in is left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

from edgeml.compress.base import Supports
from edgeml.errors import EdgemlError

if TYPE_CHECKING:
    import torch
    from torch import nn

# torch-pruning for structured pruning; the other kinds need torch alone.
SUPPORTS = Supports(name="prune", input="torch", modules=("torch_pruning",),
                    kinds=("structured", "unstructured", "2:4"))

IMPORTANCES = ("l1", "l2", "taylor")


@dataclass(frozen=True)
class StructuredConfig:
    ratio: float = 0.5                 # fraction of channels removed
    importance: str = "l1"             # l1 | l2 | taylor (taylor needs data)
    global_pruning: bool = False       # rank channels across layers instead of within each layer
    round_to: int | None = 8           # channels kept per layer are rounded down to a multiple of this
    ignore: tuple[str, ...] = ()       # module names (as in named_modules()) left whole

    def __post_init__(self):
        _check_fraction("pruning ratio", self.ratio, "the fraction of channels to remove")
        if self.importance not in IMPORTANCES:
            raise EdgemlError(f"unknown pruning importance '{self.importance}': use one of {', '.join(IMPORTANCES)}")
        if self.round_to is not None and (not isinstance(self.round_to, int) or self.round_to < 1):
            raise EdgemlError(f"round_to must be a whole number >= 1 (e.g. 8), or None for exact channel counts; "
                              f"got {self.round_to!r}")
        object.__setattr__(self, "ignore", _names(self.ignore))


@dataclass(frozen=True)
class UnstructuredConfig:
    amount: float = 0.5                # fraction of Conv/Linear weights set to zero
    global_pruning: bool = True        # one magnitude threshold for all layers instead of one per layer
    ignore: tuple[str, ...] = ()       # module names (as in named_modules()) left whole

    def __post_init__(self):
        _check_fraction("unstructured pruning amount", self.amount, "the fraction of weights to zero")
        object.__setattr__(self, "ignore", _names(self.ignore))


@dataclass
class PruneResult:
    model: nn.Module                   # the pruned copy, in eval mode
    kind: str                          # structured | unstructured | 2:4
    macs_before: int | None            # None where no example inputs were given to count them
    macs_after: int | None
    params_before: int
    params_after: int
    layers: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def macs_ratio(self) -> float | None:
        """How many times fewer MACs the pruned model needs (before / after)."""
        if self.macs_before is None or not self.macs_after:
            return None
        return self.macs_before / self.macs_after

    @property
    def params_ratio(self) -> float:
        return self.params_before / self.params_after

    def to_dict(self) -> dict:
        """Everything but the model, for the JSON run record."""
        record = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}
        record["macs_ratio"] = None if self.macs_ratio is None else round(self.macs_ratio, 4)
        record["params_ratio"] = round(self.params_ratio, 4)
        return record


def check_ignore(model: nn.Module, ignore: tuple[str, ...]) -> list[nn.Module]:
    """The modules named in `ignore`; a name that is not a module of the model is an EdgemlError."""
    modules = dict(model.named_modules())
    unknown = [name for name in ignore if not name or name not in modules]
    if unknown:
        from torch import nn

        layers = [n for n, m in modules.items() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
        examples = ", ".join((layers or [n for n in modules if n])[:5])
        raise EdgemlError(f"cannot ignore '{unknown[0]}': not a module of the model; use names from "
                          f"named_modules(), e.g. {examples}")
    return [modules[name] for name in ignore]


def count_zeros(tensor: torch.Tensor) -> int:
    return int((tensor == 0).sum())


def _check_fraction(what: str, value: float, meaning: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise EdgemlError(f"{what} {value!r} is outside (0, 1): give {meaning}, e.g. 0.5")


def _names(ignore: tuple[str, ...] | str) -> tuple[str, ...]:
    return (ignore,) if isinstance(ignore, str) else tuple(ignore)
