"""The GPU target: TensorRT engines for an NVIDIA GPU, plus PyTorch and ONNX Runtime on this machine's GPU.

The TensorRT candidates are the Jetson's without the DLA (a GPU has none): prepared here for the
GPU the profile names (T4, L4, H100), built on it. `torch-cuda-fp16` and `onnxruntime-cuda` run on
this machine's CUDA GPU and are measured; without one they are skipped. Language models get TensorRT-LLM
engines, prepared here and built on the GPU host (targets/llm_tensorrt.py).
"""

from __future__ import annotations

import copy
from pathlib import Path

from edgeml.runtimes.base import Artifact
from edgeml.runtimes.cuda import ONNXRUNTIME_CUDA, TORCH_CUDA
from edgeml.runtimes.onnxruntime import copy_model
from edgeml.runtimes.pytorch import write_program
from edgeml.targets.base import BuildContext, Candidate, Target
from edgeml.targets.llm_tensorrt import TENSORRT_LLM_LANGUAGE_MODELS
from edgeml.targets.tensorrt import TENSORRT_FP16, TENSORRT_INT8


def _no_cuda() -> str | None:
    import torch

    return None if torch.cuda.is_available() else "no CUDA GPU on this machine (torch.cuda.is_available() is False)"


def _no_ort_cuda(model: Path) -> str | None:
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return "onnxruntime has no CUDAExecutionProvider here (pip install onnxruntime-gpu)"
    return None


def _torch_cuda_fp16(model: Path, out: Path, ctx: BuildContext) -> Artifact:
    """The PyTorch model itself (`ctx.source`) in FP16 on the GPU, saved as an ExportedProgram."""
    if ctx.source.kind == "torchscript":     # not an EdgemlError: the other candidates still run
        raise ValueError("torch-cuda-fp16 runs a PyTorch nn.Module: give MODEL as a factory with --weights, or a .pt2")
    import torch

    from edgeml.compress import torch_passes

    module = copy.deepcopy(torch_passes.torch_module(ctx.source, "torch-cuda-fp16")).half().to("cuda")
    example = tuple(t.to("cuda", torch.float16) if t.is_floating_point() else t.to("cuda")
                    for t in torch_passes.example_inputs(ctx.source, ctx.calibration))
    out.mkdir(parents=True, exist_ok=True)
    config = write_program(module, example, out / "model.pt2")
    return Artifact(TORCH_CUDA.name, "fp16", out, "model.pt2",
                    runtime_config={"inputs": [s.name for s in ctx.source.inputs], **config})


def _ort_cuda(model: Path, out: Path, ctx: BuildContext) -> Artifact:
    out.mkdir(parents=True, exist_ok=True)
    copy_model(model, out / "model.onnx")
    return Artifact(ONNXRUNTIME_CUDA.name, "fp32", out, "model.onnx")


GPU = Target(
    name="gpu",
    description="NVIDIA GPUs: TensorRT engines built on the GPU host (latency predicted), and PyTorch / ONNX "
                "Runtime on this machine's CUDA GPU (measured)",
    candidates=(
        TENSORRT_FP16,
        TENSORRT_INT8,
        Candidate("torch-cuda-fp16", TORCH_CUDA, "fp16", _torch_cuda_fp16, needs_source=True,
                  method="PyTorch eager, model.half() on the CUDA GPU (FP32 inputs cast to FP16)"),
        Candidate("onnxruntime-cuda", ONNXRUNTIME_CUDA, "fp32", _ort_cuda, applies=_no_ort_cuda,
                  method="the exported ONNX model on ONNX Runtime's CUDA execution provider"),
    ),
    language_models=TENSORRT_LLM_LANGUAGE_MODELS,
    elsewhere=_no_cuda,
)
