"""Deployment targets. `TARGETS` maps each name to what it offers; `BACKENDS` the runtimes."""

from __future__ import annotations

from edgeml.errors import TargetError
from edgeml.targets.base import Backend, Target
from edgeml.targets.cpu import CPU
from edgeml.targets.gpu import GPU, ONNXRUNTIME_CUDA, TORCH_CUDA
from edgeml.targets.jetson import JETSON
from edgeml.targets.litert_backend import LITERT
from edgeml.targets.mobile import MOBILE
from edgeml.targets.onnxruntime_backend import ONNXRUNTIME
from edgeml.targets.openvino_backend import OPENVINO
from edgeml.targets.pytorch_backend import TORCH
from edgeml.targets.tensorrt_backend import TENSORRT

TARGETS: dict[str, Target] = {t.name: t for t in (CPU, MOBILE, JETSON, GPU)}
BACKENDS: dict[str, Backend] = {b.name: b for b in (ONNXRUNTIME, OPENVINO, TORCH, LITERT, TENSORRT, TORCH_CUDA,
                                                     ONNXRUNTIME_CUDA)}


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise TargetError(f"unknown target '{name}'; available: {', '.join(TARGETS)}") from None
