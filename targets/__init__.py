"""Deployment targets. `TARGETS` maps each name to what it offers; `BACKENDS` the runtimes."""

from __future__ import annotations

from edgeml.errors import TargetError
from edgeml.targets.base import Backend, Target
from edgeml.targets.cpu import CPU
from edgeml.targets.onnxruntime_backend import ONNXRUNTIME
from edgeml.targets.openvino_backend import OPENVINO
from edgeml.targets.pytorch_backend import TORCH

TARGETS: dict[str, Target] = {t.name: t for t in (CPU,)}
BACKENDS: dict[str, Backend] = {b.name: b for b in (ONNXRUNTIME, OPENVINO, TORCH)}


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise TargetError(f"unknown target '{name}'; available: {', '.join(TARGETS)}") from None
