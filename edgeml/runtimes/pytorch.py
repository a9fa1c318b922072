"""PyTorch in eager mode: the reference row for PyTorch inputs, and the runtime of `.pt2` artifacts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeml.runtimes.base import Artifact, Backend


class TorchRunner:
    def __init__(self, module, input_names: list[str], threads: int, batch: int | None = None):
        import torch

        torch.set_num_threads(threads)
        self.module = module
        self.names = input_names
        self.batch = batch           # a program exported with a fixed batch size takes that many samples a call

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        tensors = [torch.from_numpy(feeds[n]) for n in self.names]
        if self.batch is None:
            return self._call(tensors)
        parts = [self._call([t[i:i + self.batch] for t in tensors]) for i in range(0, len(tensors[0]), self.batch)]
        return [np.concatenate(column) for column in zip(*parts)]

    def _call(self, tensors) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self.module(*tensors)
        outputs = out if isinstance(out, (tuple, list)) else [out]
        return [o.detach().numpy() for o in outputs]


def open_source(source, threads: int) -> TorchRunner:
    """A runner for a PyTorch `edgeml.inputs.models.SourceModel`, its inputs in the model's order."""
    return TorchRunner(source.callable, [s.name for s in source.inputs], threads)


def open_program(artifact: Artifact, threads: int) -> TorchRunner:
    """A runner for a saved ExportedProgram; `runtime_config` names its inputs in order."""
    import torch
    import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers the quantize/dequantize ops of INT8 programs)

    module = torch.export.load(str(artifact.folder / artifact.entry)).module()
    return TorchRunner(module, artifact.runtime_config["inputs"], threads, artifact.runtime_config.get("batch"))


def write_program(module, example_inputs: tuple, path: Path) -> dict:
    """torch.export `module` with a symbolic batch size (else batch 1) into `path`; returns its runtime_config."""
    import torch

    batch = torch.export.Dim("batch")
    try:
        program = torch.export.export(module, example_inputs, dynamic_shapes=tuple({0: batch} for _ in example_inputs))
        config = {}
    except Exception:  # torch raises many kinds for shapes it cannot keep symbolic
        program = torch.export.export(module, tuple(t[:1] for t in example_inputs))
        config = {"batch": 1}
    torch.export.save(program, str(path))
    return config


TORCH = Backend("torch", ("torch",), extra="edgeml[inc]", open=open_program)   # INC is its only candidate
