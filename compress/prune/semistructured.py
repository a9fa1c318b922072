"""2:4 semi-structured sparsity: in every group of 4 consecutive weights along the input
(reduction) dimension, the 2 of smallest magnitude are set to zero.

This is the pattern the sparse tensor cores of NVIDIA Ampere and later GPUs (Jetson Orin
included) run at up to twice the dense rate under TensorRT. For Conv2d the groups run along
the input channels at each kernel position, the layout TensorRT uses, so a conv qualifies
when its input channels per group are a multiple of 4.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from edgeml.compress.prune import PruneResult, check_ignore, count_zeros

_LAYERS = (nn.Linear, nn.Conv2d)

SPEED_NOTE = ("2:4 sparsity speeds up only on NVIDIA GPUs with sparse tensor cores (Ampere and later, Jetson Orin) "
              "under TensorRT with sparsity enabled (trtexec --sparsity=enable, or the SPARSE_WEIGHTS builder flag); "
              "CPUs and other runtimes run the weights as dense, with unchanged MACs")
ACCURACY_NOTE = ("the masks were applied without fine-tuning: half of each masked layer's weights are gone, so expect "
                 "an accuracy drop that fine-tuning with the masks held fixed usually recovers")


def prune_2to4(model: nn.Module, ignore: Iterable[str] = ()) -> PruneResult:
    """Apply 2:4 masks to every Linear and Conv2d of a copy of `model` whose layout allows it.

    Layers named in `ignore` and layers whose reduction dimension does not split into groups
    of 4 are left dense and recorded with the reason.
    """
    model = copy.deepcopy(model).eval()
    skipped = {sub for m in check_ignore(model, tuple(ignore)) for sub in m.modules()}
    layers, masked = [], []
    with torch.no_grad():
        for name, m in model.named_modules():
            if not isinstance(m, _LAYERS):
                continue
            reason = "ignored" if m in skipped else _ineligible(m)
            if reason:
                layers.append({"name": name, "kind": type(m).__name__, "masked": False, "reason": reason})
                continue
            groups = _as_groups(m.weight)
            keep = groups.abs().topk(2, dim=1).indices
            mask = torch.zeros_like(groups).scatter_(1, keep, 1.0)
            m.weight.copy_(_from_groups(groups * mask, m.weight))
            masked.append(name)
            layers.append({"name": name, "kind": type(m).__name__, "masked": True, "weights": m.weight.numel(),
                           "sparsity": round(count_zeros(m.weight) / m.weight.numel(), 4)})
    violations = verify_2to4(model, masked)
    if violations:
        raise RuntimeError(f"2:4 masks did not hold on {', '.join(violations)}")

    weights = dict(model.named_modules())
    masked_numel = sum(weights[n].weight.numel() for n in masked)
    params = sum(p.numel() for p in model.parameters())
    extra = {
        "verified": True,
        "masked_layers": len(masked),
        "masked_weights": masked_numel,
        "model_sparsity": round(sum(count_zeros(p) for p in model.parameters()) / params, 4),
    }
    return PruneResult(model, "2:4", None, None, params, params, layers, [SPEED_NOTE, ACCURACY_NOTE], extra)


def verify_2to4(model: nn.Module, layers: Iterable[str] | None = None) -> list[str]:
    """Names of the weights with more than 2 non-zeros in a group of 4.

    Checks the named Linear/Conv2d layers, or by default every one whose layout allows 2:4.
    """
    modules = dict(model.named_modules())
    names = [n for n, m in modules.items() if isinstance(m, _LAYERS) and not _ineligible(m)] \
        if layers is None else list(layers)
    return [f"{name}.weight" for name in names
            if int((_as_groups(modules[name].weight) != 0).sum(1).max()) > 2]


def _ineligible(m: nn.Module) -> str | None:
    """Why a Linear/Conv2d cannot take 2:4 masks, or None when it can."""
    if isinstance(m, nn.Linear):
        size = m.in_features
        return None if size % 4 == 0 else f"in_features ({size}) is not a multiple of 4"
    size = m.in_channels // m.groups
    return None if size % 4 == 0 else f"input channels per group ({size}) is not a multiple of 4"


def _as_groups(weight: torch.Tensor) -> torch.Tensor:
    """The weight as rows of 4 consecutive input channels ([K, C, R, S] conv weights as [K, R, S, C])."""
    return (weight.permute(0, 2, 3, 1) if weight.dim() == 4 else weight).reshape(-1, 4)


def _from_groups(groups: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if like.dim() == 4:
        k, c, r, s = like.shape
        return groups.reshape(k, r, s, c).permute(0, 3, 1, 2)
    return groups.reshape(like.shape)
