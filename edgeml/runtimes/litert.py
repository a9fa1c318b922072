"""LiteRT (.tflite): writing PyTorch modules with litert-torch, running them with ai-edge-litert.

The interpreter runs on its default CPU path, the XNNPACK delegate. litert-torch 0.10 cannot lower a
symbolic batch through a flatten/view (most classifiers have one), so models are converted with a batch
of 1, as phones run them; the runner feeds larger batches through it one model batch at a time.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from edgeml.runtimes.base import Artifact, Backend


class LiteRtRunner:
    def __init__(self, model: Path, input_names: list[str], threads: int):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(model), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.names = input_names                           # in the order of the interpreter's inputs
        self.inputs = self.interpreter.get_input_details()
        self.outputs = self.interpreter.get_output_details()
        self.batch = int(self.inputs[0]["shape"][0])

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        count = len(feeds[self.names[0]])
        parts = [self._invoke([feeds[n][start:start + self.batch] for n in self.names])
                 for start in range(0, count, self.batch)]
        return [np.concatenate(column)[:count] for column in zip(*parts)]

    def _invoke(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """One model batch; a short last batch is padded with its last sample."""
        for detail, array in zip(self.inputs, arrays):
            if len(array) < self.batch:
                array = np.concatenate([array, np.repeat(array[-1:], self.batch - len(array), axis=0)])
            self.interpreter.set_tensor(detail["index"], _to_tensor(array, detail))
        self.interpreter.invoke()
        return [_from_tensor(self.interpreter.get_tensor(d["index"]), d) for d in self.outputs]


def _to_tensor(array: np.ndarray, detail: dict) -> np.ndarray:
    """Real values as the input takes them: quantized with its scale and zero point (full-integer models)."""
    dtype = detail["dtype"]
    scale, zero_point = detail["quantization"]
    if scale:
        limits = np.iinfo(dtype)
        array = np.clip(np.round(array / scale) + zero_point, limits.min, limits.max)
    return np.ascontiguousarray(array, dtype=dtype)


def _from_tensor(tensor: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    return (tensor.astype(np.float32) - zero_point) * np.float32(scale) if scale else tensor


def open_artifact(artifact: Artifact, threads: int) -> LiteRtRunner:
    return LiteRtRunner(artifact.folder / artifact.entry, artifact.runtime_config["inputs"], threads)


def convert(module, example_inputs: tuple) -> bytes:
    """The FP32 .tflite flatbuffer of `module`, traced with the first sample of `example_inputs` (a batch of 1)."""
    import litert_torch

    with _quiet():
        return litert_torch.convert(module, tuple(t[:1] for t in example_inputs)).model_content()


@contextlib.contextmanager
def _quiet():
    """litert-torch prints a tree of progress lines on stdout; edgeml reports its own progress."""
    import litert_torch

    shown = litert_torch.config.show_progress
    litert_torch.config.show_progress = False
    try:
        yield
    finally:
        litert_torch.config.show_progress = shown


LITERT = Backend("litert", ("ai_edge_litert",), extra="edgeml[tflite]", open=open_artifact)
