"""Runtimes on this machine's CUDA GPU: PyTorch in FP16, and ONNX Runtime's CUDA execution provider."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeml.runtimes.base import Artifact, Backend
from edgeml.runtimes.onnxruntime import OrtRunner
from edgeml.runtimes.pytorch import TorchRunner


class TorchCudaRunner(TorchRunner):
    """PyTorch on the CUDA GPU: float inputs go in as FP16, float outputs come back as float32."""

    def _call(self, tensors) -> list[np.ndarray]:
        import torch

        tensors = [t.to("cuda", torch.float16) if t.is_floating_point() else t.to("cuda") for t in tensors]
        with torch.inference_mode():
            out = self.module(*tensors)
        outputs = out if isinstance(out, (tuple, list)) else [out]
        return [(o.float() if o.is_floating_point() else o).cpu().numpy() for o in outputs]


def _open_torch_cuda(artifact: Artifact, threads: int) -> TorchCudaRunner:
    import torch

    module = torch.export.load(str(artifact.folder / artifact.entry)).module()
    return TorchCudaRunner(module, artifact.runtime_config["inputs"], threads, artifact.runtime_config.get("batch"))


class OrtCudaRunner(OrtRunner):
    def __init__(self, model: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(model), options, providers=["CUDAExecutionProvider"])
        # ONNX Runtime falls back to the CPU when the CUDA provider fails to load (e.g. no cuDNN).
        if self.session.get_providers()[0] != "CUDAExecutionProvider":
            raise RuntimeError("ONNX Runtime could not start its CUDA provider (check the CUDA and cuDNN libraries "
                               "onnxruntime-gpu needs)")


def _open_ort_cuda(artifact: Artifact, threads: int) -> OrtCudaRunner:
    return OrtCudaRunner(artifact.folder / artifact.entry, threads)


TORCH_CUDA = Backend("torch-cuda", ("torch",), extra="a CUDA build of torch", open=_open_torch_cuda)
ONNXRUNTIME_CUDA = Backend("onnxruntime-cuda", ("onnxruntime",), extra="onnxruntime-gpu", open=_open_ort_cuda)
