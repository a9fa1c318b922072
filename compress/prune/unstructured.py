"""Unstructured pruning: the Conv/Linear weights of smallest magnitude set to zero."""

from __future__ import annotations

import copy
import zlib

import torch
from torch import nn
from torch.nn.utils import prune

from edgeml.compress.prune import PruneResult, UnstructuredConfig, check_ignore, count_zeros
from edgeml.errors import EdgemlError

_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)

DENSE_NOTE = ("unstructured sparsity does not speed up dense runtimes (ONNX Runtime, OpenVINO CPU): the zeros are "
              "still multiplied and MACs are unchanged; it only shrinks the weights once compressed (zip, download, "
              "flash)")


def prune_unstructured(model: nn.Module, config: UnstructuredConfig | None = None) -> PruneResult:
    """Zero `config.amount` of the Conv/Linear weights of a copy of `model` by L1 magnitude.

    With `global_pruning` one threshold is shared by all layers (each layer's sparsity then
    follows its weight magnitudes); otherwise every layer loses the same fraction.
    """
    config = config or UnstructuredConfig()
    model = copy.deepcopy(model).eval()
    skipped = {sub for m in check_ignore(model, config.ignore) for sub in m.modules()}
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, _LAYERS) and m not in skipped]
    if not targets:
        raise EdgemlError("unstructured pruning found no Conv or Linear layer outside `ignore`: ignore fewer layers")
    size_before = compressed_size(model)
    with torch.no_grad():
        if config.global_pruning:
            prune.global_unstructured([(m, "weight") for _, m in targets], prune.L1Unstructured,
                                      amount=config.amount)
        else:
            for _, m in targets:
                prune.l1_unstructured(m, "weight", amount=config.amount)
        for _, m in targets:
            prune.remove(m, "weight")

    layers = [{"name": name, "kind": type(m).__name__, "weights": m.weight.numel(),
               "sparsity": round(count_zeros(m.weight) / m.weight.numel(), 4)} for name, m in targets]
    pruned = sum(m.weight.numel() for _, m in targets)
    params = sum(p.numel() for p in model.parameters())
    zeros = sum(count_zeros(m.weight) for _, m in targets)
    extra = {
        "config": {"amount": config.amount, "global_pruning": config.global_pruning, "ignore": list(config.ignore)},
        "sparsity": round(zeros / pruned, 4),          # of the weights pruning applied to
        "model_sparsity": round(sum(count_zeros(p) for p in model.parameters()) / params, 4),
        "compressed_bytes_before": size_before,
        "compressed_bytes_after": compressed_size(model),
    }
    return PruneResult(model, "unstructured", None, None, params, params, layers, [DENSE_NOTE], extra)


def compressed_size(model: nn.Module) -> int:
    """Bytes of the state_dict's tensors (floats as float32) after zlib compression."""
    blobs = []
    for tensor in model.state_dict().values():
        tensor = tensor.detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.float()
        blobs.append(tensor.contiguous().numpy().tobytes())
    return len(zlib.compress(b"".join(blobs)))
