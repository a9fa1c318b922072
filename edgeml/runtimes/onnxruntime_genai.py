"""ONNX Runtime GenAI: the decoding loop (KV cache, greedy search) of ONNX Runtime around a model its model builder
wrote (genai_config.json beside model.onnx)."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

import numpy as np


class OrtGenaiGenerator:
    def __init__(self, folder: Path, threads: int):
        import onnxruntime_genai as og

        self.og = og
        config = og.Config(str(folder))
        options = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
        config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
        self.model = og.Model(config)

    def _generator(self, length: int, at_least: int = 0):
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=length, min_length=at_least, do_sample=False)
        return self.og.Generator(self.model, params)

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        generator = self._generator(len(ids))
        generator.append_tokens(np.asarray(ids, dtype=np.int32))
        return np.asarray(generator.get_output("logits"), dtype=np.float32)[0]

    def stream(self, ids: Sequence[int], max_new_tokens: int, stop: Collection[int] = ()) -> Iterator[int]:
        length = len(ids) + max_new_tokens            # with no stop token, not even its end-of-sequence stops it
        generator = self._generator(length, 0 if stop else length)
        generator.append_tokens(np.asarray(ids, dtype=np.int32))
        for _ in range(max_new_tokens):
            if generator.is_done():
                return
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
            yield token
            if token in stop:
                return


def open_generator(folder: Path, threads: int) -> OrtGenaiGenerator:
    return OrtGenaiGenerator(folder, threads)
