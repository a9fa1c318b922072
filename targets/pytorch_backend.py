"""Running the original PyTorch model in eager mode: the reference row for PyTorch inputs."""

from __future__ import annotations

import numpy as np


class TorchRunner:
    def __init__(self, module, input_names: list[str], threads: int):
        import torch

        torch.set_num_threads(threads)
        self.module = module
        self.names = input_names

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self.module(*(torch.from_numpy(feeds[n]) for n in self.names))
        outputs = out if isinstance(out, (tuple, list)) else [out]
        return [o.detach().numpy() for o in outputs]


def open_source(source, threads: int) -> TorchRunner:
    """A runner for a PyTorch `edgeml.models.SourceModel`, its inputs in the model's order."""
    return TorchRunner(source.callable, [s.name for s in source.inputs], threads)
