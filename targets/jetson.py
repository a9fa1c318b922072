"""The Jetson target: TensorRT engines for an NVIDIA Jetson, prepared here and built on the device.

FP16 and INT8 on the GPU, and INT8 on a Deep Learning Accelerator core for Jetsons that have one
(Orin NX, AGX Orin, Xavier). Quality is measured here with ONNX Runtime on the same ONNX model;
latency is predicted from the device profile (see targets/tensorrt.py). Language models get TensorRT Edge-LLM
engines, prepared the same way (targets/llm_tensorrt.py).
"""

from __future__ import annotations

from pathlib import Path

from edgeml.targets.base import Target
from edgeml.targets.llm_tensorrt import TENSORRT_EDGE_LANGUAGE_MODELS
from edgeml.targets.tensorrt import TENSORRT_FP16, TENSORRT_INT8, TENSORRT_INT8_DLA

TEGRA_RELEASE = Path("/etc/nv_tegra_release")     # present on every Jetson (Linux for Tegra)

JETSON = Target(
    name="jetson",
    description="NVIDIA Jetson (TensorRT on the GPU and the DLA): engines built on the device, latency predicted",
    candidates=(TENSORRT_FP16, TENSORRT_INT8, TENSORRT_INT8_DLA),
    language_models=TENSORRT_EDGE_LANGUAGE_MODELS,
    elsewhere=lambda: None if TEGRA_RELEASE.exists() else "this machine is not a Jetson",
)
