"""Runtimes: how to open and run an artifact (ONNX Runtime, OpenVINO, PyTorch, LiteRT, TensorRT, and the CUDA
ones), apart from the targets (edgeml.targets) that decide which candidates a device gets.

`BACKENDS` is the one registry of them, by the name an artifact's manifest gives.
"""

from __future__ import annotations

from edgeml.runtimes.base import Backend
from edgeml.runtimes.cuda import ONNXRUNTIME_CUDA, TORCH_CUDA
from edgeml.runtimes.litert import LITERT
from edgeml.runtimes.onnxruntime import ONNXRUNTIME
from edgeml.runtimes.openvino import OPENVINO
from edgeml.runtimes.pytorch import TORCH
from edgeml.runtimes.tensorrt import TENSORRT

BACKENDS: dict[str, Backend] = {b.name: b for b in (ONNXRUNTIME, OPENVINO, TORCH, LITERT, TENSORRT, TORCH_CUDA,
                                                     ONNXRUNTIME_CUDA)}
