"""The PyTorch passes of a run: structured pruning, then distillation from the original.

They work on an `nn.Module` (a factory + weights, a module, or a .pt2 program's module) and
return a new in-memory `SourceModel`, so export, candidates and bundles treat the compressed
model like any other PyTorch model.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from edgeml.compress.distill import DistillConfig, DistillResult, distill, holdout
from edgeml.compress.prune import PruneResult, StructuredConfig
from edgeml.compress.prune.structured import prune_structured
from edgeml.errors import ModelError
from edgeml.inputs.data import Dataset, at_least_two
from edgeml.inputs.models import SourceModel, state_hash


def torch_module(source: SourceModel, purpose: str) -> torch.nn.Module:
    """The trainable nn.Module of `source`, or a clear error for kinds that have none."""
    if source.kind in ("factory", "module"):
        return source.module
    if source.kind == "exported_program":
        module = source.module.module()
        # The exported graph keeps the mode it was exported in (dropout and batch norm as in
        # eval); torch makes train()/eval() raise on it, so let them only set the flag.
        for name in ("train", "eval"):
            module.__dict__.pop(name, None)
        return module
    raise ModelError(f"{purpose} needs a PyTorch nn.Module: give package.module:factory with --weights, "
                     f"or a .pt2 file (a {source.kind.replace('_', ' ')} model cannot be changed)")


def derived(source: SourceModel, module: torch.nn.Module, suffix: str, note: str) -> SourceModel:
    """A new in-memory source for a compressed copy of `source`."""
    module.eval()
    return SourceModel("module", f"{source.name}-{suffix}", state_hash(module), list(source.inputs),
                       module=module, notes=[note])


def example_inputs(source: SourceModel, data: Dataset) -> tuple[torch.Tensor, ...]:
    """Two real samples in the model's input order (two, so no dimension looks constant)."""
    feeds = data.feeds(0, 2)
    return tuple(torch.from_numpy(np.ascontiguousarray(at_least_two(feeds[s.name]))) for s in source.inputs)


def prune(source: SourceModel, config: StructuredConfig, data: Dataset) -> tuple[SourceModel, PruneResult]:
    """Structured channel pruning of `source`; `data` gives the example inputs (and Taylor's loss)."""
    result = prune_structured(torch_module(source, "pruning"), example_inputs(source, data), config, data)
    note = (f"pruned {config.ratio:.0%} of channels ({config.importance} importance): MACs "
            f"{result.macs_before:,.0f} -> {result.macs_after:,.0f}, parameters "
            f"{result.params_before:,} -> {result.params_after:,}")
    return derived(source, result.model, f"pruned{round(config.ratio * 100)}", note), result


def distill_into(teacher: SourceModel, student: SourceModel, train: Dataset, config: DistillConfig,
                 on_epoch: Callable[[int, int, dict], None] | None = None) -> tuple[SourceModel, DistillResult]:
    """Distill `teacher` into `student` on `train` (10% of it held out for early stopping)."""
    fit, validation = holdout(train, 0.1, config.seed)
    result = distill(torch_module(teacher, "distillation"), torch_module(student, "distillation"),
                     fit, validation, config, on_epoch)
    note = (f"distilled from {teacher.name} for {len(result.curve)} epoch(s) ({result.stopped}), best "
            f"validation {result.metric} {result.best_validation:.4f} at epoch {result.best_epoch}")
    return derived(student, result.student, "distilled", note), result
