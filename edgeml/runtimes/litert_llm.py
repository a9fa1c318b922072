"""LiteRT: a language model exported by litert-torch (edgeml.targets.llm_litert) run by ai-edge-litert's
CompiledModel on the CPU with XNNPACK, the runtime of LiteRT-LM on a phone.

The .tflite's signatures are `prefill_<n>` (n tokens at a time) and `decode` (one): each takes `tokens`, their
positions `input_pos`, an additive attention `mask` over the whole cache (0 where a cached position is at or before
the token's, a large negative number elsewhere) and the KV cache (`kv_cache_k_<layer>`, `kv_cache_v_<layer>`), and
gives the cache back with the tokens' keys and values written at their positions; decode also gives the logits.
Here the cache's input and output are one set of buffers, updated in place, never copied through Python, as
LiteRT-LM runs it. A prompt is padded to the shortest prefill that holds it (the padding's keys and values land past
the prompt, masked, and decoding overwrites them); its last token goes through decode, which gives the logits.
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import sys
import tempfile
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

import numpy as np

from edgeml.captured_output import logged
from edgeml.errors import EdgemlError
from edgeml.runtimes.generation import greedy

MODEL = "model.tflite"
MASKED = np.float32(-1e9)


@functools.cache
def _environment():
    """The process's one LiteRT environment. LiteRT logs at INFO level on stderr as it creates an environment (the
    accelerators and compiler plugins it finds), as it first writes a tensor buffer, and as it destroys them, and no
    Python API sets that level: models are opened with stderr in a log, in this one environment (destroying one
    environment a model logs again), and stderr is closed at exit, after Python's own last words."""
    import ai_edge_litert
    from ai_edge_litert.environment import Environment, EnvironmentOptions

    atexit.register(_close_stderr)
    return Environment.create(options=EnvironmentOptions(runtime_path=str(Path(ai_edge_litert.__file__).parent)))


def _close_stderr() -> None:
    sys.stderr.flush()
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)


class LiteRtGenerator:
    def __init__(self, folder: Path, threads: int):
        with tempfile.TemporaryDirectory() as log, logged(Path(log) / "litert.log"):
            self._open(Path(folder), threads)

    def _open(self, folder: Path, threads: int) -> None:
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator
        from ai_edge_litert.options import CpuOptions, Options

        options = Options(hardware_accelerators=HardwareAccelerator.CPU, cpu_options=CpuOptions(num_threads=threads))
        self.model = CompiledModel.from_file(str(folder / MODEL), environment=_environment(), options=options)
        signatures = self.model.get_signature_list()
        self.prefills = sorted((int(m.group(1)), name) for name in signatures
                               if (m := re.fullmatch(r"prefill_(\d+)", name)))
        decode = self.model.get_input_tensor_details("decode")
        self.max_length = int(decode["mask"]["shape"][-1])
        self.vocab = int(np.prod(self.model.get_output_tensor_details("decode")["logits"]["shape"]))
        cache = [name for name in signatures["decode"]["inputs"] if name.startswith("kv_cache_")]
        self.cache = {name: self.model.create_input_buffer_by_name("decode", name) for name in cache}
        for name, buffer in self.cache.items():     # new buffers may hold any bytes: a NaN there, masked or not,
            buffer.write(np.zeros(decode[name]["shape"], decode[name]["dtype"]))     # makes attention NaN
        self.inputs = {s: {n: self.model.create_input_buffer_by_name(s, n)
                           for n in signatures[s]["inputs"] if n not in self.cache} for s in signatures}
        self.outputs = {s: {n: self.model.create_output_buffer_by_name(s, n)
                            for n in signatures[s]["outputs"] if n not in self.cache} for s in signatures}

    def _run(self, signature: str, tokens: np.ndarray, start: int) -> None:
        positions = np.arange(start, start + tokens.shape[1], dtype=np.int32)
        mask = np.where(np.arange(self.max_length)[None, :] <= positions[:, None], np.float32(0), MASKED)
        inputs = self.inputs[signature]
        inputs["tokens"].write(tokens)
        inputs["input_pos"].write(positions)
        inputs["mask"].write(mask[None, None])
        self.model.run_by_name(signature, {**inputs, **self.cache}, {**self.outputs[signature], **self.cache})

    def _decode(self, token: int, position: int) -> np.ndarray:
        if position >= self.max_length:
            raise EdgemlError(f"{position + 1} tokens do not fit this build's KV cache of {self.max_length}")
        self._run("decode", np.array([[token]], dtype=np.int32), position)
        return self.outputs["decode"]["logits"].read(self.vocab, np.float32)

    def _prefill(self, ids: Sequence[int]) -> None:
        """Write the keys and values of `ids` at positions 0.. in prefill calls; the end of the cache, where the
        shortest prefill no longer fits, one decode call a token."""
        start = 0
        while start < len(ids):
            left = len(ids) - start
            fits = [(n, name) for n, name in self.prefills if start + n <= self.max_length]
            if not fits:
                self._decode(ids[start], start)
                start += 1
                continue
            n, name = next(((n, name) for n, name in fits if n >= left), fits[-1])
            tokens = np.zeros((1, n), dtype=np.int32)
            tokens[0, :min(n, left)] = ids[start:start + n]
            self._run(name, tokens, start)
            start += min(n, left)

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """One decode call a token: prefill gives no logits."""
        return np.stack([self._decode(token, position) for position, token in enumerate(ids)])

    def stream(self, ids: Sequence[int], max_new_tokens: int, stop: Collection[int] = ()) -> Iterator[int]:
        if len(ids) > self.max_length:
            raise EdgemlError(f"{len(ids)} tokens do not fit this build's KV cache of {self.max_length}")
        self._prefill(ids[:-1])
        state = {"last": self._decode(ids[-1], len(ids) - 1), "position": len(ids)}

        def feed(token: int) -> None:
            state["last"] = self._decode(token, state["position"])
            state["position"] += 1

        yield from greedy(lambda: state["last"], feed, min(max_new_tokens, self.max_length - len(ids)), stop)


def open_generator(folder: Path, threads: int) -> LiteRtGenerator:
    return LiteRtGenerator(folder, threads)
