"""Structured pruning: whole channels removed through torch-pruning's dependency graph.

The dependency graph couples every layer that shares a channel dimension (a conv and the
layers reading its output, both branches of a residual add, the features behind a flatten),
so a removed channel is removed everywhere at once and the model keeps running.
"""

from __future__ import annotations

import copy
from dataclasses import asdict

import torch
import torch.nn.functional as F
from torch import nn

from edgeml.compress.prune import PruneResult, StructuredConfig, check_ignore
from edgeml.errors import DataError, EdgemlError, first_line
from edgeml.inputs.data import Dataset

TAYLOR_SAMPLES = 256
TAYLOR_BATCH = 64

# Layers that set the channel count of what they produce; everything else on the way to an
# output (activations, norms, reshapes, adds, concatenations) passes it through.
_WIDTH_LAYERS = (nn.modules.conv._ConvNd, nn.Linear, nn.Embedding, nn.LSTM, nn.MultiheadAttention)
_PRUNED_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)

FINE_TUNE_NOTE = ("channels were removed without fine-tuning: expect an accuracy drop that a short fine-tune "
                  "(or distillation from the unpruned model) usually recovers")


def prune_structured(model: nn.Module, example_inputs: tuple[torch.Tensor, ...],
                     config: StructuredConfig | None = None, data: Dataset | None = None) -> PruneResult:
    """Remove `config.ratio` of the channels of a copy of `model`.

    The layers producing the model's outputs keep their output channels, so the outputs keep
    their shape. Layers named in `config.ignore` are kept whole: neither their input nor their
    output channels are removed, so the layers feeding them keep their output channels too.
    Taylor importance needs `data` (labels, or else the model's own predictions, give the loss).
    """
    import torch_pruning as tp

    config = config or StructuredConfig()
    if not isinstance(model, nn.Module) or isinstance(model, torch.jit.ScriptModule):
        raise EdgemlError("structured pruning needs the model as a Python nn.Module (a factory or a state_dict "
                          "with its class), not TorchScript or an exported program")
    if config.importance == "taylor" and data is None:
        raise EdgemlError("taylor importance needs data to compute gradients: pass calibration data, "
                          "or use importance l1 or l2")
    model = copy.deepcopy(model).eval().requires_grad_(True)    # frozen weights would hide from the trace
    ignored = check_ignore(model, config.ignore)
    example_inputs = tuple(example_inputs)
    widths_before = _widths(model)
    with torch.enable_grad():           # the dependency graph is traced through autograd
        macs_before, params_before = tp.utils.count_ops_and_params(model, example_inputs)
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs, verbose=False)
        outputs = _output_layers(graph)
        frozen = set(outputs) | _kept_whole(graph, ignored)
        if config.importance == "taylor":
            importance = tp.importance.TaylorImportance()
            samples = _accumulate_gradients(model, data)
        else:
            importance = tp.importance.MagnitudeImportance(p=1 if config.importance == "l1" else 2)
        pruner = tp.pruner.BasePruner(
            model, example_inputs, importance=importance, pruning_ratio=config.ratio,
            global_pruning=config.global_pruning, round_to=config.round_to, ignored_layers=list(frozen))
        pruner.step()
    model.zero_grad(set_to_none=True)
    model.eval()
    macs_after, params_after = tp.utils.count_ops_and_params(model, example_inputs)

    names = {m: n for n, m in model.named_modules()}
    widths_after = _widths(model)
    layers = [{"name": name, "kind": kind, "in_before": in_b, "in_after": widths_after[name][1],
               "out_before": out_b, "out_after": widths_after[name][2]}
              for name, (kind, in_b, out_b) in widths_before.items()]
    kept = {names.get(m) for m in frozen}
    untouched = [r["name"] for r in layers if r["out_after"] == r["out_before"] and r["name"] not in kept]
    notes = [FINE_TUNE_NOTE]
    if untouched:
        notes.append(f"kept all output channels of {', '.join(untouched)}: torch-pruning skips a channel group "
                     "when rounding to round_to would leave no channel, or when the group is tied to a kept layer")
    extra = {"config": {**asdict(config), "ignore": list(config.ignore)},
             "output_layers": [names[m] for m in outputs]}
    if config.importance == "taylor":
        extra["taylor_samples"] = samples
    return PruneResult(model, "structured", int(macs_before), int(macs_after), int(params_before), int(params_after),
                       layers, notes, extra)


def _widths(model: nn.Module) -> dict[str, tuple[str, int, int]]:
    """name -> (kind, input channels, output channels) of every Conv and Linear layer."""
    widths = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            widths[name] = (type(m).__name__, m.in_features, m.out_features)
        elif isinstance(m, nn.modules.conv._ConvNd):
            widths[name] = (type(m).__name__, m.in_channels, m.out_channels)
    return widths


def _output_layers(graph) -> list[nn.Module]:
    """The layers whose output channels are the model's output channels.

    The graph is traced back from the outputs, so its sinks produce them; from there walk back
    through channel-preserving ops to the first layers that set the width.
    """
    stack = [node for node in graph.module2node.values() if not node.outputs]
    seen, found = set(), []
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if isinstance(node.module, _WIDTH_LAYERS):
            found.append(node.module)
        else:
            stack.extend(node.inputs)
    return found


def _kept_whole(graph, ignored: list[nn.Module]) -> set[nn.Module]:
    """Every layer whose output channels are tied to a channel of an ignored layer (input or output).

    torch-pruning's `ignored_layers` only protects output channels; a channel group is skipped
    as a whole when any of its out-channel layers is ignored, so those are returned.
    """
    targets = {sub for m in ignored for sub in m.modules()}
    kept = set(targets)
    for group in graph.get_all_groups(root_module_types=_PRUNED_LAYERS):
        if any(dep.target.module in targets for dep, _ in group):
            kept.update(dep.target.module for dep, _ in group if graph.is_out_channel_pruning_fn(dep.handler))
    return kept


def _accumulate_gradients(model: nn.Module, data: Dataset) -> int:
    """Sum the loss gradients of up to TAYLOR_SAMPLES samples into the weights' .grad.

    Without labels the model's own top-1 predictions are the targets: a divergence from its own
    outputs would be zero, with zero gradient, before any channel is removed.
    """
    n = min(len(data), TAYLOR_SAMPLES)
    if n == 0:
        raise DataError("taylor importance got an empty dataset: pass data with samples")
    model.zero_grad(set_to_none=True)
    for start in range(0, n, TAYLOR_BATCH):
        stop = min(start + TAYLOR_BATCH, n)
        inputs = [torch.from_numpy(v) for v in data.feeds(start, stop).values()]
        try:
            logits = _first_tensor(model(*inputs))
            targets = logits.argmax(1) if data.labels is None else torch.as_tensor(data.labels[start:stop])
            loss = F.cross_entropy(logits, targets.long(), reduction="sum")
        except (RuntimeError, ValueError, IndexError) as e:
            raise DataError(f"taylor importance cannot compute a classification loss on this data: "
                            f"{first_line(e)}") from e
        loss.backward()
    return n


def _first_tensor(outputs) -> torch.Tensor:
    while not isinstance(outputs, torch.Tensor):
        outputs = next(iter(outputs.values())) if isinstance(outputs, dict) else outputs[0]
    return outputs
