"""The digits CNN made hard for INT8, for the accuracy-budget tests."""

from __future__ import annotations

import copy

import torch
from torch import nn


def heavy_tailed_model(digits) -> nn.Module:
    """The digits CNN with its two most active hidden units scaled up 1000x and their consumers scaled down to
    match: the same function in float; in INT8 that activation's range crushes every other unit to zero."""
    model = copy.deepcopy(digits.model)
    x = torch.from_numpy(digits.test.inputs["input"])
    with torch.no_grad():
        hidden, head = model.classifier[1], model.classifier[3]
        active = torch.relu(hidden(model.features(x).flatten(1))).mean(0).topk(2).indices
        hidden.weight[active] *= 1000
        hidden.bias[active] *= 1000
        head.weight[:, active] /= 1000
    assert torch.allclose(model(x), digits.model(x), atol=1e-3)
    return model
